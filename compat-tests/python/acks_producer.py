"""A steady producer with confluent-kafka, for the network-partition test: sends
"PREFIX-N" to partition 0 of TOPIC every 20 ms for SECONDS and prints
"ack OFFSET VALUE UNIXTIME" for each acknowledgement (UNIXTIME: when it arrived) and
"fail VALUE ERROR" for each failure.

Usage: acks_producer.py BOOTSTRAP TOPIC PREFIX ACKS SECONDS
Retries are off and idempotence too, so a value is written at most once.
"""
import sys
import time

from confluent_kafka import Producer


def main():
    bootstrap, topic, prefix, acks, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": acks,
        "enable.idempotence": False,
        "retries": 0,
        "linger.ms": 0,
        "message.timeout.ms": 5000,
        "socket.timeout.ms": 3000,
    })

    def delivered(err, msg):
        if err is None:
            print("ack %d %s %.3f" % (msg.offset(), msg.value().decode(), time.time()), flush=True)
        else:
            print("fail %s %s" % (msg.value().decode(), err), flush=True)

    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        producer.produce(topic, value=("%s-%d" % (prefix, n)).encode(), partition=0, on_delivery=delivered)
        n += 1
        producer.poll(0.02)
    producer.flush(10)


if __name__ == "__main__":
    main()
