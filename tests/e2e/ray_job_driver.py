"""The driver `ray job submit` runs in test_cluster.py (and the README's example)."""

import sys

from batchlog.client import BatchlogClient

client = BatchlogClient(address="auto")  # the cluster this job runs in
f = client.upload(sys.argv[1])
batch = client.wait(client.create(f["id"], "/v1/chat/completions")["id"])  # progress bar
print("STATUS", batch["status"])
for line in client.results(batch["id"]):
    print("RESULT", line["custom_id"], line["response"]["status_code"])
