"""Produce and consume with a Python Kafka client at its default settings.

Usage: round_trip.py kafka-python|confluent-kafka BOOTSTRAP TOPIC
Exits non-zero unless every message produced comes back, in order, with its key.
"""
import sys
import time

COUNT = 500


def kafka_python(bootstrap, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(COUNT):
        producer.send(topic, key=b"k%d" % (i % 7), value=b"v%d" % i, partition=0)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    deadline = time.time() + 60
    while len(got) < COUNT and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend((r.offset, r.key, r.value) for r in records)
    consumer.close()
    return got


def confluent_kafka(bootstrap, topic):
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(COUNT):
        producer.produce(topic, key=b"k%d" % (i % 7), value=b"v%d" % i, partition=0)
        producer.poll(0)
    assert producer.flush(30) == 0, "unacknowledged messages"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "py", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.time() + 60
    while len(got) < COUNT and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise RuntimeError(m.error())
        got.append((m.offset(), m.key(), m.value()))
    consumer.close()
    return got


def main():
    client, bootstrap, topic = sys.argv[1:4]
    got = {"kafka-python": kafka_python, "confluent-kafka": confluent_kafka}[client](bootstrap, topic)
    want = [(i, b"k%d" % (i % 7), b"v%d" % i) for i in range(COUNT)]
    if got != want:
        print(f"{client}: got {len(got)} messages, first difference:", file=sys.stderr)
        for g, w in zip(got, want):
            if g != w:
                print(f"  got {g}, want {w}", file=sys.stderr)
                break
        sys.exit(1)
    print(f"{client}: {COUNT} messages round-tripped")


if __name__ == "__main__":
    main()
