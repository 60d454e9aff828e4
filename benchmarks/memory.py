"""Peak resident memory (RSS) of `hellogpt train` on the whole shared corpus (target: at most 1 GB).

    python benchmarks/memory.py [--steps 30] [--corpus ../shared/corpus]

In a temporary home, each step runs as its own process and its peak RSS is read from the
kernel's accounting of that process (os.wait4), so the figures do not mix:

    1. hellogpt tokenizer train      (vocabulary 8000, on all eight books)
    2. hellogpt data info            (tokenizes the books into the memory-mapped cache)
    3. hellogpt train --max-steps N  (the seed's model of bench_models.py, batch 32, evaluations included)

Prints a table and writes benchmarks/out/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench_models import SEED_MODEL, SHARED_CORPUS, as_flags, shared_books

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
LIMIT_MB = 1024


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Run `python -m hellogpt ARGS`; return (its peak RSS in MB, seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hellogpt", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"hellogpt {' '.join(args)} failed with exit code {proc.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps (default: 30)")
    parser.add_argument("--corpus", type=Path, default=SHARED_CORPUS, help=f"the books (default: {SHARED_CORPUS})")
    parser.add_argument("--out", type=Path, default=OUT / "memory.json")
    args = parser.parse_args()
    books = len(shared_books(args.corpus, "the memory budget, set for the whole shared corpus,"))

    rows = []
    with tempfile.TemporaryDirectory() as home:
        common = ["--home", home, "--data", str(args.corpus)]
        vocab = f"--vocab-size={SEED_MODEL['vocab_size']}"
        steps = [("tokenizer train", ["tokenizer", "train", vocab]), ("data info (token cache)", ["data", "info"]),
                 (f"train {args.steps} steps", ["train", f"--max-steps={args.steps}", *as_flags(SEED_MODEL)])]
        for name, command in steps:
            mb, seconds = peak_rss_mb(command + common)
            rows.append({"step": name, "peak_rss_mb": mb, "seconds": seconds})

    print(f"Peak RSS on {args.corpus} ({books} books), the seed's model (bench_models.py):")
    for r in rows:
        print(f"  {r['step']:28} {r['peak_rss_mb']:8.0f} MB  {r['seconds']:6.1f} s")
    training = rows[-1]["peak_rss_mb"]
    print(f"Training: {training:.0f} MB of the {LIMIT_MB} MB budget ({'within' if training <= LIMIT_MB else 'OVER'}).")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                    "corpus": str(args.corpus), "rows": rows, "limit_mb": LIMIT_MB}, indent=2))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
