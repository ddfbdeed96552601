"""Kafka records made by the CloudEvents Python SDK (its Kafka protocol binding),
for tests/e2e/fanout.rs: one JSON line per record, {"headers": {...}, "value": "..."}.
Installed by scripts/test-deps.sh (pip package `cloudevents`)."""

import json
import sys

from cloudevents.v1.http import CloudEvent
from cloudevents.v1.kafka import to_binary, to_structured


def line(message):
    headers = {k: v.decode() for k, v in message.headers.items()}
    print(json.dumps({"headers": headers, "value": message.value.decode()}))


json_data = {"datacontenttype": "application/json"}
paid = CloudEvent({"type": "invoice.paid", "source": "/billing", "id": "py-1", "tenant": "beta", **json_data}, {"amount": 42})
user = CloudEvent({"type": "user.created", "source": "/users", "id": "py-2", "tenant": "acme", **json_data}, {"user": 7})
line(to_binary(paid))
line(to_structured(user))
sys.stdout.flush()
