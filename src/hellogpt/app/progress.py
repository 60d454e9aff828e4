"""Progress a person watches: training's live bar or log lines, tokenizing and download bars, summaries.

The layers below report through callbacks (training.trainer.Reporter, gutenberg.DownloadProgress,
on_progress functions); this module turns those reports into rich output on the terminal, or plain
lines when the output is a file or a pipe.
"""

from __future__ import annotations

import math
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column

from hellogpt.app.questions import ask
from hellogpt.data.gutenberg import DownloadProgress
from hellogpt.training.metrics import METRICS_FILE
from hellogpt.training.trainer import STOP_SIGNALS, Reporter, Status, TrainResult


def duration(seconds: float) -> str:
    """1:05:09, or 5:09 under an hour."""
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _where(s: Status, sep: str) -> str:
    """How far the run is: time against a time budget (with the steps so far), else steps against their total."""
    if s.time_budget:
        return f"{duration(s.elapsed)}/{duration(s.time_budget)}{sep}step {s.step:,}"
    total = f"/{s.total_steps:,}" if s.total_steps else ""
    return f"step {s.step:,}{total}"


class TokenizingBar:
    """A transient bar while the token cache is built (on_progress of data.tokens.prepare_tokens)."""

    def __init__(self, console: Console):
        self.console, self.bar, self.task = console, None, TaskID(0)

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = Progress(TextColumn("Tokenizing the books"), BarColumn(), DownloadColumn(),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.task = self.bar.add_task("tokenize", total=total)
            self.bar.start()
        self.bar.update(self.task, completed=done)
        if done >= total:
            self.bar.stop()


class LogLines(Reporter):
    """Training progress as plain lines (when the output is not a terminal): the first steps, then at
    most one line every few seconds, and the last step; notes as they come."""

    def __init__(self, console: Console, interval: float = 5.0):
        self.console, self.interval = console, interval
        self.last = -math.inf
        self.tokenizing_bar = TokenizingBar(console)

    def line(self, s: Status) -> str:
        val = f" | val {s.val_loss:.4f}" if s.val_loss is not None else ""
        eta = f" | ETA {duration(s.eta)}" if s.eta is not None else ""
        return (f"{_where(s, ' | ')} | epoch {s.epoch:.2f} | loss {s.loss:.4f}{val} | "
                f"{s.tokens_per_s:,.0f} tok/s | {s.progress:.0%}{eta}")

    def update(self, s: Status) -> None:
        now = time.monotonic()
        if s.step <= 3 or s.progress >= 1.0 or now - self.last >= self.interval:
            self.console.print(self.line(s), highlight=False)
            self.last = now

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def tokenizing(self, done: int, total: int) -> None:
        self.tokenizing_bar(done, total)

    def retry_save(self, message: str) -> bool:
        """On a terminal, ask whether to try the failed save again (after freeing space, say)."""
        if not sys.stdin.isatty():
            return False
        self.close()
        self.console.print(message, highlight=False, markup=False)
        return ask("Try saving again?", assume_yes=False)


class LiveBar(LogLines):
    """A live progress bar on a terminal: time or step, loss, last validation loss, ETA, tokens/s, epoch.
    It appears with the first step; notes print above it."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.bar = None

    def update(self, s: Status) -> None:
        if self.bar is None:
            self.bar = Progress(BarColumn(bar_width=16, table_column=Column(min_width=16)),
                                TextColumn("{task.fields[text]}", table_column=Column(no_wrap=True)),
                                console=self.console)
            self.task = self.bar.add_task("train", total=1.0, text="")
            self.bar.start()
        # The most telling first: a narrow terminal cuts the end of the line.
        val = f"  val {s.val_loss:.4f}" if s.val_loss is not None else ""
        eta = f"  ETA {duration(s.eta)}" if s.eta is not None else ""
        text = f"{_where(s, '  ')}  loss {s.loss:.4f}{val}{eta}  {s.tokens_per_s:,.0f} tok/s  epoch {s.epoch:.2f}"
        self.bar.update(self.task, completed=s.progress, text=text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def training_display(console: Console) -> LogLines:
    return LiveBar(console) if console.is_terminal else LogLines(console)


class DownloadBars(DownloadProgress):
    """One bar per book being downloaded, and the download's messages, on the terminal."""

    def __init__(self, console: Console):
        self.console = console
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             console=console)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()

    def note(self, message: str) -> None:
        self.bars.console.print(message, highlight=False, markup=False)

    def bytes(self, title: str, received: int, total: int | None) -> None:
        if title not in self.tasks:
            self.tasks[title] = self.bars.add_task(title, total=total)
        self.bars.update(self.tasks[title], completed=received, total=total)


def print_summary(console: Console, result: TrainResult) -> None:
    how = f"Stopped by {STOP_SIGNALS[result.stopped_by]}" if result.interrupted else "Done"
    console.print(f"{how}: {result.session_steps:,} steps this run ({result.steps:,} in total), "
                  f"{result.tokens:,} tokens in {duration(result.seconds)} of training, "
                  f"{result.tokens_per_s:,.0f} tokens/s.", highlight=False)
    if result.val_loss is not None:
        console.print(f"Validation: loss {result.val_loss:.4f}, perplexity {math.exp(result.val_loss):.2f}, "
                      f"{result.val_bpb:.4f} bits per byte.", highlight=False)
    console.print(f"Checkpoint: {result.checkpoint}", highlight=False)
    if result.plot is not None:
        console.print(f"Loss curve: {result.plot}; metrics: {result.plot.with_name(METRICS_FILE)}", highlight=False)
    if result.interrupted:
        console.print(f"Continue with `hellogpt train --model-name {result.model_name} --resume`.", highlight=False)
