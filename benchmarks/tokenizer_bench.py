"""Tokenizer speed on the shared corpus (../shared/corpus, eight books, 3.4 MB).

Training: `train_tokenizer` as `hellogpt tokenizer train` runs it (read and clean the
books, split off validation, learn the merges, save the file), on all eight books
and on Pride and Prejudice alone; targets: the whole corpus in at most 10 s at
vocabulary 8000.
Encoding: `Tokenizer.encode_documents` (what `prepare_tokens` uses: batch encoding
over pieces, on every core) on the eight cleaned books, in MB of UTF-8 text per second;
target: at least 5 MB/s. `encode_batch` on the eight whole books, one thread each, is
shown for comparison. Each figure is the median of --runs runs; CPU seconds (all threads
together) next to wall-clock seconds show how much of the machine the run had.

    python benchmarks/tokenizer_bench.py [--runs 5] [--corpus DIR]

Without ../shared/corpus (and no --corpus), only Pride and Prejudice is measured, the copy bundled with
HelloGPT: its training rows, and encoding it alone (a single book is cut into pieces too).

Prints a table and writes benchmarks/out/tokenizer_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench_models import REFERENCE_BOOK, SHARED_CORPUS, reference_book, shared_books

from hellogpt.core.paths import Home
from hellogpt.data.books import read_book
from hellogpt.data.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "tokenizer_bench.json"


def median_seconds(fn, runs: int) -> tuple[float, float]:
    """Median wall-clock seconds and median CPU seconds (all threads) of `runs` calls."""
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=None, help=f"the books (default: {SHARED_CORPUS}, else "
                        "only the bundled Pride and Prejudice)")
    args = parser.parse_args()

    if args.corpus or SHARED_CORPUS.is_dir():
        corpus = args.corpus or SHARED_CORPUS
        books = shared_books(corpus)
        corpus_label = f"{len(books)} books"
    else:
        book = reference_book()
        print(f"{SHARED_CORPUS} is absent: measuring Pride and Prejudice alone ({book}); the rows of all eight "
              "books need the shared corpus (or --corpus DIR).")
        corpus, books, corpus_label = book, [book], book.name
    texts = [read_book(p) for p in books]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    tasks = [(corpus, corpus_label, 8000), (corpus, corpus_label, 2048)]
    if len(books) > 1 and (Path(corpus) / REFERENCE_BOOK).is_file():
        tasks.append((Path(corpus) / REFERENCE_BOOK, REFERENCE_BOOK, 2048))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        for data, label, vocab_size in tasks:
            seconds, cpu = median_seconds(
                lambda: train_tokenizer(home, data, vocab_size, val_fraction=0.1, show_progress=False), args.runs)
            rows.append({"task": f"train, vocabulary {vocab_size}", "data": label, "seconds": seconds,
                         "cpu_seconds": cpu})
        tokenizer = train_tokenizer(home, corpus, 8000, val_fraction=0.1, show_progress=False)
        for name, encode in (("encode_documents", tokenizer.encode_documents),
                             ("encode_batch (whole books)", tokenizer.encode_batch)):
            encode(texts)  # warm-up
            seconds, cpu = median_seconds(lambda: encode(texts), args.runs)
            rows.append({"task": f"{name}, vocabulary 8000", "data": corpus_label, "seconds": seconds,
                         "cpu_seconds": cpu, "MB_per_s": megabytes / seconds})

    table = Table(title=f"Tokenizer speed, {megabytes:.2f} MB of text, median of {args.runs} runs, "
                        f"{os.cpu_count()} CPUs")
    for column in ("task", "data", "seconds", "CPU seconds", "MB/s"):
        table.add_column(column, justify="left" if column in ("task", "data") else "right")
    for row in rows:
        table.add_row(row["task"], row["data"], f"{row['seconds']:.2f}", f"{row['cpu_seconds']:.2f}",
                      f"{row['MB_per_s']:.1f}" if "MB_per_s" in row else "")
    Console().print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"corpus": str(corpus), "books": [p.name for p in books], "megabytes": megabytes,
                               "runs": args.runs, "cpus": os.cpu_count(), "results": rows}, indent=1))
    print(f"Wrote {OUT}")


if __name__ == "__main__":
    main()
