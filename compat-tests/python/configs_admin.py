"""The config APIs and DeleteRecords as the Python admin clients use them, for the
compat tests.

Usage: configs_admin.py BOOTSTRAP TOPIC
The topic must exist with data in partition 0. Prints one JSON object with what each
step answered: the topic's and the broker's described configs (value and source),
an incremental change by confluent-kafka, a full AlterConfigs by kafka-python, the
errors of bad changes, the partition sizes DescribeLogDirs reports, and the low
watermark DeleteRecords reports.
"""
import json
import sys

from confluent_kafka import TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                   ConfigResource, ResourceType)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpResource
from kafka.admin import ConfigResourceType as KpType


def describe(admin, resource):
    [(_, future)] = admin.describe_configs([resource], request_timeout=10).items()
    return {name: {"value": e.value, "source": int(e.source), "read_only": e.is_read_only,
                   "synonyms": [s.name for s in e.synonyms.values()]}
            for name, e in future.result().items()}


def error_of(future):
    try:
        future.result()
        return "NO_ERROR"
    except Exception as e:  # the client raises KafkaException wrapping a KafkaError
        return e.args[0].name() if e.args and hasattr(e.args[0], "name") else str(e)


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    out = {}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic_res = ConfigResource(ResourceType.TOPIC, topic)
    out["before"] = describe(admin, topic_res)
    out["broker"] = describe(admin, ConfigResource(ResourceType.BROKER, "1"))

    change = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    ])
    [(_, f)] = admin.incremental_alter_configs([change], request_timeout=10).items()
    out["incremental"] = error_of(f)
    out["after_incremental"] = describe(admin, topic_res)

    bad = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    [(_, f)] = admin.incremental_alter_configs([bad], request_timeout=10).items()
    out["bad_value"] = error_of(f)
    unknown = ConfigResource(ResourceType.TOPIC, "no-such-topic", incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    [(_, f)] = admin.incremental_alter_configs([unknown], request_timeout=10).items()
    out["unknown_topic"] = error_of(f)
    static = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[
        ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    [(_, f)] = admin.incremental_alter_configs([static], request_timeout=10).items()
    out["static_broker"] = error_of(f)
    dynamic = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[
        ConfigEntry("log.retention.bytes", "1000000000", incremental_operation=AlterConfigOpType.SET)])
    [(_, f)] = admin.incremental_alter_configs([dynamic], request_timeout=10).items()
    out["dynamic_broker"] = error_of(f)
    out["broker_after"] = describe(admin, ConfigResource(ResourceType.BROKER, "1"))

    kp = KafkaAdminClient(bootstrap_servers=bootstrap)
    kp.alter_configs([KpResource(KpType.TOPIC, topic, configs={"retention.ms": "3600000"})])
    described = kp.describe_configs([KpResource(KpType.TOPIC, topic)])
    out["kafka_python_after_alter"] = {k: {"value": e["value"], "source": e["config_source"]}
                                       for k, e in described["topic"][topic].items()}
    dirs = kp.describe_log_dirs()
    out["log_dir_sizes"] = {f'{t["name"]}-{p["partition_index"]}': p["partition_size"]
                            for broker in dirs for d in broker["log_dirs"]
                            for t in d["topics"] for p in t["partitions"] if t["name"] == topic}
    kp.close()

    [(_, f)] = admin.delete_records([TopicPartition(topic, 0, 5)], request_timeout=10).items()
    out["low_watermark"] = f.result().low_watermark
    [(_, f)] = admin.delete_records([TopicPartition(topic, 0, 1 << 40)], request_timeout=10).items()
    out["delete_past_end"] = error_of(f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
