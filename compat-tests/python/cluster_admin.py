"""What the Python admin clients see of a cluster, for the compat tests.

Usage: cluster_admin.py BOOTSTRAP
Prints one JSON object: the broker ids confluent-kafka's and kafka-python's admin clients
list, the controller id and the cluster id DescribeCluster answers.
"""
import json
import sys

from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient


def main():
    bootstrap = sys.argv[1]
    confluent = AdminClient({"bootstrap.servers": bootstrap})
    listed = confluent.list_topics(timeout=10)
    described = confluent.describe_cluster(request_timeout=10).result()
    kp = KafkaAdminClient(bootstrap_servers=bootstrap)
    kp_described = kp.describe_cluster()
    kp.close()
    print(json.dumps({
        "confluent_brokers": sorted(listed.brokers),
        "kafka_python_brokers": sorted(b["broker_id"] for b in kp_described["brokers"]),
        "controller": described.controller.id,
        "cluster_id": described.cluster_id,
        "kafka_python_controller": kp_described["controller_id"],
    }))


if __name__ == "__main__":
    main()
