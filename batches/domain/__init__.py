"""The pure batch domain: wire models, events, the status machine, validation.

Nothing here does I/O or imports ray, fastapi, duckdb, httpx or eventlog, so every
rule of the service can be read and tested without starting anything.
"""
