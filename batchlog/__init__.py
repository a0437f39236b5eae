"""Entry points, above everything else: the `batchlog` CLI, `serve` (the one composition
root: settings -> Ray -> coordinator -> façade) and the Ray-driver client.

Imports point one way: eventlog <- batches <- actors <- batchlog (tests/unit/test_layers.py).
"""
