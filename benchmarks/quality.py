"""The two-minute model: what `hellogpt train --time 120` reaches on a book, through the real CLI.

    python benchmarks/quality.py                  # the reference task: Pride and Prejudice, 120 s
    python benchmarks/quality.py --all-books      # also each shared book trained alone, same budget
    python benchmarks/quality.py --time 60 -- --d-model 128   # another budget; settings after -- go to train

The reference book is ../shared/corpus/pg1342.txt, or where that folder is absent the copy of Pride and
Prejudice bundled with HelloGPT (the same bytes, written to benchmarks/out/bundled/). --all-books needs the
other seven shared books (or --corpus DIR).

Each book is trained in a fresh home (a temporary folder), so the whole process is timed as a
user meets it: start-up, tokenizer training, tokenizing, training, the final evaluation and the
checkpoint. Reported per book: validation bits per byte (the run's final evaluation, read from
metrics.jsonl beside the checkpoint), the whole process's wall time, optimizer steps and tokens
seen. The exact commands are printed; a table goes to stdout and JSON to benchmarks/out/quality.json.
The load average is recorded with the numbers: on a busy machine fewer steps fit in the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench_models import SHARED_CORPUS, reference_book, shared_books

from hellogpt.core.paths import Home
from hellogpt.core.settings import Config
from hellogpt.training.metrics import METRICS_FILE

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
# Issue 6's reference points on the reference task (2-core CPU, 120 s budget).
NANOGPT_CHAR_BPB = 2.257
TARGET_BPB = 1.50
WALL_BUDGET_S = 140.0


def train_command(home: Path, book: Path, seconds: float, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "hellogpt", "--home", str(home), "train", "--data", str(book),
            "--time", f"{seconds:g}", "--yes", *extra]


def run_book(book: Path, seconds: float, extra: list[str], log_dir: Path) -> dict:
    """Train on one book in a fresh home; the figures of that run."""
    with tempfile.TemporaryDirectory(prefix="hellogpt-quality-") as tmp:
        home = Path(tmp)
        cmd = train_command(home, book, seconds, extra)
        print("$ " + shlex.join(cmd), flush=True)
        log = log_dir / f"quality_{book.stem}.log"
        started = time.perf_counter()
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"training failed (exit code {proc.returncode}); see {log}")
        metrics_path = Home(home).model_dir(Config.model_name) / METRICS_FILE
        metrics = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    last_train = [m for m in metrics if m["split"] == "train"][-1]
    last_val = [m for m in metrics if m["split"] == "val"][-1]
    return {"book": book.name, "bits_per_byte": last_val["bits_per_byte"], "val_loss": last_val["loss"],
            "wall_seconds": wall, "train_seconds": last_train["elapsed"], "steps": last_train["step"],
            "tokens": last_train["tokens"], "epochs": last_train["epoch"], "command": shlex.join(cmd),
            "log": str(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", type=float, default=120.0, help="training budget per book in seconds (default: 120)")
    parser.add_argument("--all-books", action="store_true", help="also train on each other shared book alone")
    parser.add_argument("--corpus", type=Path, default=None, help=f"the books (default: {SHARED_CORPUS}; without "
                        "it, the reference task reads the bundled Pride and Prejudice)")
    parser.add_argument("--out", type=Path, default=OUT / "quality.json")
    parser.add_argument("train_args", nargs="*", help="extra `hellogpt train` settings, after --")
    args = parser.parse_args()

    reference = reference_book(args.corpus)
    books = [reference]
    if args.all_books:
        books += [p for p in shared_books(args.corpus, "--all-books") if p.name != reference.name]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = []
    for book in books:
        rows.append(run_book(book, args.time, args.train_args, args.out.parent))
        r = rows[-1]
        print(f"  {r['book']}: {r['bits_per_byte']:.4f} bits per byte, {r['wall_seconds']:.1f} s wall, "
              f"{r['steps']:,} steps, {r['tokens']:,} tokens", flush=True)

    print(f"\nload average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"{os.cpu_count()} CPUs; budget --time {args.time:g}")
    header = f"{'book':12} {'bits/byte':>9} {'wall s':>7} {'steps':>7} {'tokens':>10} {'epochs':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['book']:12} {r['bits_per_byte']:9.4f} {r['wall_seconds']:7.1f} {r['steps']:7,} "
              f"{r['tokens']:10,} {r['epochs']:6.2f}")
    ref = rows[0]
    if args.time == 120.0 and not args.train_args:
        verdict = "meets" if ref["bits_per_byte"] <= TARGET_BPB and ref["wall_seconds"] <= WALL_BUDGET_S \
            else "does not meet"
        print(f"\nReference task: {ref['bits_per_byte']:.4f} bits per byte in {ref['wall_seconds']:.1f} s "
              f"({ref['bits_per_byte'] / NANOGPT_CHAR_BPB:.2f}x nanoGPT's character-level {NANOGPT_CHAR_BPB}); "
              f"{verdict} the target of {TARGET_BPB} within {WALL_BUDGET_S:g} s.")
    args.out.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "time_budget": args.time,
        "train_args": args.train_args, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "rows": rows,
    }, indent=2))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
