"""A child process for the index tests (run as a script, not collected by pytest).

index_child.py DIR SEGMENT_BYTES SEED [die-at-seal]
    appends groups of 1-3 events round robin to streams s0..s4 with small segments, so
    segments are sealed often; prints "STREAM VERSION" after each acknowledged append.
    Event data {"n": version}. With die-at-seal it kills itself with SIGKILL the moment it
    is about to rename its first index file into place (a crash at seal).
"""

from __future__ import annotations

import os
import random
import signal
import sys

from eventlog import EventStore, NewEvent


def main() -> None:
    root, segment_bytes, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4:] == ["die-at-seal"]:
        real_replace = os.replace

        def replace(src: str, dst: str) -> None:
            if str(dst).endswith(".idx"):
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        os.replace = replace  # type: ignore[assignment]
    rng = random.Random(seed)
    store = EventStore.open(root, segment_bytes=segment_bytes)
    streams = [f"s{i}" for i in range(5)]
    versions = {s: store.version(s) for s in streams}
    i = 0
    while True:
        s = streams[i % len(streams)]
        i += 1
        v = versions[s]
        n = rng.randint(1, 3)
        events = [
            NewEvent("T", {"n": v + k + 1, "pad": "p" * rng.randint(0, 80)}) for k in range(n)
        ]
        versions[s] = store.append(s, events, v)
        sys.stdout.write(f"{s} {versions[s]}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
