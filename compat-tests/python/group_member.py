"""One kafka-python consumer-group member, for the compat tests.

Usage: group_member.py BOOTSTRAP TOPIC GROUP SECONDS
Prints "assigned P,Q,..." whenever its assignment changes and "msg P O" per record,
commits after every poll, and leaves the group after SECONDS.
"""
import sys
import time

from kafka import KafkaConsumer


def main():
    bootstrap, topic, group, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        batches = consumer.poll(timeout_ms=200)
        assignment = sorted(tp.partition for tp in consumer.assignment())
        if assignment != last:
            print("assigned " + ",".join(map(str, assignment)), flush=True)
            last = assignment
        for records in batches.values():
            for r in records:
                print(f"msg {r.partition} {r.offset}", flush=True)
        if batches:
            consumer.commit()
    consumer.close()


if __name__ == "__main__":
    main()
