"""Tests drive the real `batchlog serve` subprocess through this (see batches/localservice.py)."""

from batches.localservice import Service, free_port

__all__ = ["Service", "free_port"]
