"""A child process for the multi-process tests (run as a script, not collected by pytest).

eventlog_child.py serve DIR        commands on stdin, one per line:
    append STREAM EXPECTED N   -> "ok VERSION" | "wrong ACTUAL"
    version STREAM             -> "version V"
eventlog_child.py writer DIR STREAM SEED
    appends groups of 1-3 events to STREAM forever; after each append returns it prints
    the acknowledged version. Event data {"n": version} makes duplicates visible.
eventlog_child.py compact DIR      runs compaction
"""

from __future__ import annotations

import random
import sys

from eventlog import EventStore, NewEvent, WrongExpectedVersion


def serve(path: str) -> None:
    store = EventStore.open(path)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "append":
            stream, expected, n = args[0], int(args[1]), int(args[2])
            events = [NewEvent("T", {"n": expected + i + 1, "pid": "child"}) for i in range(n)]
            try:
                print("ok", store.append(stream, events, expected), flush=True)
            except WrongExpectedVersion as e:
                print("wrong", e.actual, flush=True)
        elif cmd == "version":
            print("version", store.version(args[0]), flush=True)
        elif cmd == "exit":
            break
    store.close()


def writer(path: str, stream: str, seed: int) -> None:
    rng = random.Random(seed)
    store = EventStore.open(path)
    v = store.version(stream)
    while True:
        n = rng.randint(1, 3)
        events = [
            NewEvent("T", {"n": v + i + 1, "pad": "p" * rng.randint(0, 300)}) for i in range(n)
        ]
        v = store.append(stream, events, v)
        sys.stdout.write(f"{v}\n")
        sys.stdout.flush()


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "serve":
        serve(path)
    elif mode == "writer":
        writer(path, sys.argv[3], int(sys.argv[4]))
    elif mode == "compact":
        from eventlog.compaction import compact

        compact(path)
        print("done", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
