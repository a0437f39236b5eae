"""Test support shipped with the product, used by tests, benchmarks, the notebook and the demo.

- ``FakeUpstream``: a fake OpenAI-compatible upstream, a real HTTP server in a subprocess
  (``python -m batches.testing.fake_upstream``), with switches for faults and latency.
- ``Service``: ``batchlog serve`` as a subprocess on a free loopback port, killed with
  its whole process session (its Ray included).

Ray-free, like everything in ``batches``: both talk to the service only over HTTP.
"""

from batches.testing.fake_upstream import FakeUpstream
from batches.testing.service import Service, free_port

__all__ = ["FakeUpstream", "Service", "free_port"]
