"""Share groups (KIP-932) and their dead-letter topics as confluent-kafka's
ShareConsumer uses them, for the compat tests.

Usage:
  share_consumers.py produce BOOTSTRAP TOPIC PARTITIONS COUNT [PREFIX]
      creates TOPIC (if absent) and produces COUNT records "PREFIX<i>" spread over its
      partitions by key; prints {"produced": COUNT}.
  share_consumers.py produce_txn BOOTSTRAP TOPIC
      creates TOPIC (1 partition) and writes three transactions of 10 records each:
      "c0".."c9" committed, "a0".."a9" aborted, "c10".."c19" committed.
  share_consumers.py configure BOOTSTRAP GROUP KEY=VALUE...
      sets group configs with IncrementalAlterConfigs; prints the described values.
  share_consumers.py consume BOOTSTRAP TOPIC GROUP CONSUMERS EXPECTED [SECONDS [exact]]
      runs CONSUMERS share consumers (one thread each, explicit acknowledgement) that
      accept every record, until EXPECTED records were accepted in all and nothing was
      delivered for a second since the first delivery, or SECONDS pass; prints who got what. With "exact" they
      stop at once after EXPECTED acceptances and leave the rest unacknowledged. Records whose value starts with "poison" are released every
      time, those starting with "reject" are rejected (neither counts as accepted).
  share_consumers.py hold BOOTSTRAP TOPIC GROUP
      polls until it holds records, prints their offsets, then waits to be killed.
  share_consumers.py read BOOTSTRAP TOPIC
      reads TOPIC from the start with a classic consumer; prints values and headers.
"""
import json
import sys
import threading
import time

from confluent_kafka import AcknowledgeType, Consumer, Producer, ShareConsumer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                   ConfigResource, NewTopic, ResourceType)


def produce(bootstrap, topic, partitions, count, prefix="m"):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.create_topics([NewTopic(topic, int(partitions), 1)])[topic].result()
    except Exception as e:  # already there
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            raise
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(int(count)):
        p.produce(topic, key=b"k%d" % i, value=("%s%d" % (prefix, i)).encode())
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    print(json.dumps({"produced": int(count)}))


def produce_txn(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "share-txn-%s" % topic})
    p.init_transactions(30)
    for prefix, first, commit in (("c", 0, True), ("a", 0, False), ("c", 10, True)):
        p.begin_transaction()
        for i in range(first, first + 10):
            p.produce(topic, value=("%s%d" % (prefix, i)).encode())
        # Sent before the transaction ends: an abort would otherwise purge them unsent.
        assert p.flush(30) == 0
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    print(json.dumps({"produced": 30}))


def configure(bootstrap, group, pairs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
               for k, v in (p.split("=", 1) for p in pairs)]
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    for f in admin.incremental_alter_configs([resource]).values():
        f.result()
    [(_, described)] = admin.describe_configs([ConfigResource(ResourceType.GROUP, group)]).items()
    print(json.dumps({name: e.value for name, e in described.result().items()}))


def share_consumer(bootstrap, group):
    return ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group,
                          "share.acknowledgement.mode": "explicit"})


def consume(bootstrap, topic, group, consumers, expected, seconds=60, mode="quiet"):
    consumers, expected, seconds = int(consumers), int(expected), float(seconds)
    first_delivery = []
    lock = threading.Lock()
    accepted = []      # (consumer, partition, offset, value)
    deliveries = {}    # value -> delivery counts seen
    done = threading.Event()
    started = time.time()
    last_delivery = [time.time()]

    def run(index):
        c = share_consumer(bootstrap, group)
        c.subscribe([topic])
        try:
            while not done.is_set() and time.time() - started < seconds:
                msgs = c.poll(0.5)
                with lock:
                    quiet = bool(first_delivery) and time.time() - last_delivery[0] > 1.0
                    if len(accepted) >= expected and quiet:
                        done.set()
                for m in msgs:
                    if m.error():
                        continue
                    if done.is_set():
                        break
                    value = m.value().decode()
                    with lock:
                        deliveries.setdefault(value, []).append(m.delivery_count())
                        last_delivery[0] = time.time()
                        if not first_delivery:
                            first_delivery.append(last_delivery[0])
                    if value.startswith("poison"):
                        c.acknowledge(m, AcknowledgeType.RELEASE)
                    elif value.startswith("reject"):
                        c.acknowledge(m, AcknowledgeType.REJECT)
                    else:
                        c.acknowledge(m, AcknowledgeType.ACCEPT)
                        with lock:
                            accepted.append((index, m.partition(), m.offset(), value))
                            if mode == "exact" and len(accepted) >= expected:
                                done.set()
                c.commit_sync()
        except Exception as e:  # an exact stop leaves records unacknowledged
            if mode != "exact":
                raise
            print("stopped: %s" % e, file=sys.stderr)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_consumer = {}
    for index, partition, _, _ in accepted:
        by_consumer.setdefault(str(index), {}).setdefault(str(partition), 0)
        by_consumer[str(index)][str(partition)] += 1
    values = [v for _, _, _, v in accepted]
    print(json.dumps({
        "accepted": len(values),
        "distinct": len(set(values)),
        "values": sorted(set(values)),
        "by_consumer": by_consumer,
        "deliveries": {v: d for v, d in deliveries.items() if not v.startswith("m") or max(d) > 1},
        "seconds": round(time.time() - started, 3),
        "first_delivery_at": first_delivery[0] if first_delivery else None,
        # To the last delivery (the run then waits a quiet second before it stops).
        "records_per_second": round(len(values) / max(last_delivery[0] - started, 1e-3)),
    }))


def hold(bootstrap, topic, group):
    c = share_consumer(bootstrap, group)
    c.subscribe([topic])
    while True:
        msgs = [m for m in c.poll(1.0) if not m.error()]
        if msgs:
            print(json.dumps({"held": [m.value().decode() for m in msgs], "at": time.time()}), flush=True)
            time.sleep(3600)


def read(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader-%f" % time.time(),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out, idle = [], 0
    while idle < 6:
        m = c.poll(1.0)
        if m is None:
            idle += 1 if out else 0.25
            continue
        if m.error():
            continue
        idle = 0
        out.append({"key": m.key().decode() if m.key() else None,
                    "value": m.value().decode() if m.value() else None,
                    "headers": {k: v.decode() for k, v in (m.headers() or [])}})
    c.close()
    print(json.dumps(out))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "configure":
        configure(args[0], args[1], args[2:])
    else:
        {"produce": produce, "produce_txn": produce_txn, "consume": consume, "hold": hold,
         "read": read}[command](*args)
