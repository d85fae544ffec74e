"""Reads every record of a topic's partitions from the beginning with kafka-python,
for the replication tests' history checker.

Usage: read_all.py BOOTSTRAP TOPIC PARTITIONS SECONDS [ISOLATION]
Prints "rec P O VALUE" per record up to each partition's end offset at the start
(the high watermark, or with ISOLATION read_committed the last stable offset), and
"end P O" per partition; gives up after SECONDS.
"""
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    partitions, seconds = int(sys.argv[3]), float(sys.argv[4])
    isolation = sys.argv[5] if len(sys.argv) > 5 else "read_uncommitted"
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, isolation_level=isolation
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    for tp in tps:
        print("end %d %d" % (tp.partition, ends[tp]), flush=True)
    deadline = time.time() + seconds
    while time.time() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                if r.offset < ends[tp]:
                    print("rec %d %d %s" % (tp.partition, r.offset, r.value.decode()), flush=True)
    consumer.close()


if __name__ == "__main__":
    main()
