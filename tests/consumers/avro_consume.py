#!/usr/bin/env python3
"""An independent consumer of the relay's Avro topics: Confluent's own Python
client (confluent-kafka) reads the topics from the beginning and decodes each
value with AvroDeserializer, which fetches the writer schema from the schema
registry by the id in the Confluent wire-format header. It knows nothing of
studio-relay.

Prints one JSON line per message:
  {"topic", "partition", "offset", "schema_id", "value"}
where timestamp-millis fields (datetimes in Python) are written back as
epoch milliseconds. Exits 0 once --expected messages were read, 1 when the
timeout passed first.

    avro_consume.py --bootstrap 127.0.0.1:9092 \
        --registry http://127.0.0.1:8080/apis/ccompat/v7 \
        --expected 100 --timeout 60 topic-a topic-b
"""

import argparse
import datetime
import json
import struct
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(value):
    """The decoded datum as JSON-ready values."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    return value


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--ca-file")
    p.add_argument("--basic-auth", help="user:password")
    p.add_argument("--expected", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("topics", nargs="+")
    args = p.parse_args()

    registry_conf = {"url": args.registry}
    if args.ca_file:
        registry_conf["ssl.ca.location"] = args.ca_file
    if args.basic_auth:
        registry_conf["basic.auth.user.info"] = args.basic_auth
    deserializer = AvroDeserializer(SchemaRegistryClient(registry_conf))

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "independent-avro-consumer",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(timeout=20)
    partitions = [
        TopicPartition(topic, p, OFFSET_BEGINNING)
        for topic in args.topics
        if topic in metadata.topics
        for p in metadata.topics[topic].partitions
    ]
    consumer.assign(partitions)

    read = 0
    deadline = time.monotonic() + args.timeout
    while read < args.expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            print(f"consumer error: {msg.error()}", file=sys.stderr)
            continue
        raw = msg.value()
        ctx = SerializationContext(msg.topic(), MessageField.VALUE)
        value = deserializer(raw, ctx)
        print(
            json.dumps(
                {
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "schema_id": struct.unpack(">I", raw[1:5])[0],
                    "value": plain(value),
                }
            ),
            flush=True,
        )
        read += 1
    consumer.close()
    if read < args.expected:
        print(f"read {read} of {args.expected} messages", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
