"""Summarise a py-spy profile in collapsed-stack form (`python -m bench --profile DIR` writes
one per scenario): `python -m bench.flame DIR/stream.txt [--top 25] [--match server/]`.

Prints the share of samples per thread kind, then the functions with the most samples on top
of the stack (self) and anywhere in it (inclusive; each function counted once per stack).
Line numbers are dropped so that one function is one row.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def frames_of(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    return [_LINE.sub(")", frame) for frame in stack.split(";")], int(count)


def thread_kind(frames: list[str]) -> str:
    for frame in frames:
        if "concurrent/futures/thread.py" in frame:
            return "thread pool (sqlite writer)"
        if "aiosqlite" in frame:
            return "aiosqlite reader threads"
    return "event loop thread" if frames and "threading.py" not in frames[0] else "other threads"


def summarise(path: Path, top: int, match: str) -> str:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = frames_of(line)
        total += count
        kinds[thread_kind(frames)] += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            if match in frame:
                inclusive[frame] += count
    out = [f"{path}: {total} samples"]
    out += [f"  {n / total:6.1%}  {kind}" for kind, n in kinds.most_common()]
    out.append(f"\nself (top of stack), top {top}:")
    out += [f"  {n / total:6.1%}  {frame}" for frame, n in self_counts.most_common(top)]
    out.append(f"\ninclusive, frames matching {match!r}, top {top}:")
    out += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flame")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--match", default="", help="inclusive rows only for frames containing this"
    )
    args = parser.parse_args()
    if not args.profile.exists() or args.profile.stat().st_size == 0:
        print(f"{args.profile}: missing or empty (did py-spy start?)")
        return
    print(summarise(args.profile, args.top, args.match))


if __name__ == "__main__":
    main()
