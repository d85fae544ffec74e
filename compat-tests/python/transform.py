"""A consume-transform-produce loop with exactly-once (KIP-98, KIP-447), as an
application runs it with confluent-kafka: read INPUT in GROUP (read_committed), write
each record upper-cased to OUTPUT and commit the input offsets in the same
transaction. Stops once no record has arrived for IDLE seconds.

Usage: transform.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID IDLE
Prints "committed N" after each transaction (N records).
"""
import sys
import time

from confluent_kafka import Consumer, Producer


def main():
    bootstrap, source, sink, group, txn_id = sys.argv[1:6]
    idle = float(sys.argv[6])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        # A restarted instance takes its predecessor's place at once (KIP-345),
        # rather than wait for the dead member's session to end.
        "group.instance.id": txn_id,
        "session.timeout.ms": 6000,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5})
    producer.init_transactions(30)
    consumer.subscribe([source])
    last = time.time()
    while time.time() - last < idle:
        batch = consumer.consume(num_messages=50, timeout=0.5)
        batch = [m for m in batch if m.error() is None]
        if not batch:
            continue
        last = time.time()
        producer.begin_transaction()
        for m in batch:
            producer.produce(sink, key=m.key(), value=m.value().upper())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
        print("committed %d" % len(batch), flush=True)
    consumer.close()


if __name__ == "__main__":
    main()
