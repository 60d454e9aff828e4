"""Training: `hellogpt train`, and `train(...)` for the console application.

One optimizer step, as in nanoGPT:

    for each of grad_accum micro-batches:    x, y = B windows of T tokens (targets: x shifted by one)
        loss = model(x, y) / grad_accum       mean cross-entropy of the next-token predictions
        loss.backward()                       gradients add up over the micro-batches
    clip the gradients' global norm to grad_clip
    set the learning rates: linear warm-up, then linear decay over the run
    optimizer step (Muon for the blocks' weight matrices, AdamW for the rest: optimizer.py), gradients cleared
    from halfway on, fold the weights into their moving average, the model we keep (averaging.py)

The run's length is a plan: --time SECONDS (120 when nothing else is given), --max-steps N or
--epochs E (passes over the training tokens); with several given, the first limit reached ends it.
The learning-rate schedule follows the plan's progress (for a time budget: the elapsed time), so the
model at the end is the one the whole budget was planned for.

Every checkpoint (artifacts/checkpoints/<model_name>/serial_<N>.pt) holds what is needed to
continue exactly where it stopped: model, optimizer, plan, step, settings, fingerprints, RNG
states, metrics. Checkpoints are written at the end, every --save-every steps and on Ctrl-C.
`--resume` rebuilds everything from the latest serial and continues the same run: stopping and
resuming gives the same losses as never stopping.

Under torchrun, each process trains on its share of every batch with DistributedDataParallel
(see distributed.py); rank 0 alone writes files and shows progress.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from hellogpt import distributed
from hellogpt.averaging import WeightAverage
from hellogpt.checkpoint_manager import (build_model, check_tokenizer, load_checkpoint, locate, save_checkpoint,
                                         serials, tokenizer_path_for)
from hellogpt.config import GELUS, RUN_LENGTH, Config, describe_vocab_size, given_settings_from_args
from hellogpt.corpus import data_path as books_path
from hellogpt.dataloader import EpochSampler, TokenData, num_windows, prepare_tokens, windows
from hellogpt.device import autocast, pick_device, setup_device
from hellogpt.errors import UserError
from hellogpt.evaluate import EvalResult, evaluate
from hellogpt.fileio import atomic_path
from hellogpt.model import GPT
from hellogpt.optimizer import make_optimizer
from hellogpt.paths import Home
from hellogpt.plots import METRICS_FILE, PLOT_FILE, plot_loss_curve
from hellogpt.sizing import fit_size, should_fit

# --resume takes these from the command line when given; every other setting comes from the checkpoint.
SESSION_SETTINGS = RUN_LENGTH + ("eval_every", "save_every")
MACHINE_SETTINGS = ("device", "compile")  # this machine's: always from the command line (or the defaults)


@dataclass
class TrainResult:
    steps: int  # optimizer steps of the model so far (all runs)
    session_steps: int  # of this run
    tokens: int  # tokens trained on in this run (all processes)
    seconds: float  # of training steps in this run (evaluations and saves excluded)
    tokens_per_s: float
    val_loss: float | None  # the last evaluation of this run
    val_bpb: float | None
    checkpoint: Path | None  # the serial written last (None on ranks other than 0)
    interrupted: bool  # stopped by Ctrl-C


# --- the plan and the learning-rate schedule ---


@dataclass
class Plan:
    """How long the run is. It ends when the first limit it has is reached (0: no such limit)."""

    total_steps: int = 0
    time: float = 0.0  # seconds of training, evaluations included

    def progress(self, step: int, elapsed: float) -> float:
        """From 0 at the start to 1 at the end."""
        p = 0.0
        if self.total_steps:
            p = max(p, step / self.total_steps)
        if self.time:
            p = max(p, elapsed / self.time)
        return min(p, 1.0)

    def describe(self) -> str:
        parts = ([f"{self.total_steps:,} steps"] if self.total_steps else []) + \
                ([f"{self.time:g} s"] if self.time else [])
        return " or ".join(parts)


def plan_for(config: Config, train_tokens: int, tokens_per_step: int) -> Plan:
    """The plan the settings ask for: max_steps, epochs (as steps over the training tokens) and time,
    whichever of those that are set ends first."""
    steps = [config.max_steps] if config.max_steps else []
    if config.epochs:
        steps.append(max(1, math.ceil(config.epochs * train_tokens / tokens_per_step)))
    return Plan(min(steps, default=0), config.time)


def lr_factor(config: Config, step: int, progress: float) -> float:
    """The learning rates' share of their peak: a linear warm-up over the first warmup_steps, times a
    straight line from 1 down to min_lr_ratio over the run's progress (0 to 1). One formula for step
    and time budgets, and for both optimizers (Muon's peak is muon_lr, AdamW's is lr). On the
    two-minute task the straight line beat nanoGPT's cosine by about 0.008 bits per byte: it keeps the
    rates higher for longer, and the weights' average (averaging.py) smooths what that stirs up."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return warmup * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * (1.0 - progress))


def check_settings(config: Config) -> None:
    """Values that would make training fail or run forever, caught before any work."""
    rules = [
        ("batch_size", config.batch_size >= 1, "at least 1"),
        ("grad_accum", config.grad_accum >= 1, "at least 1"),
        ("lr", config.lr > 0, "positive"),
        ("muon_lr", config.muon_lr > 0, "positive"),
        ("min_lr_ratio", 0 <= config.min_lr_ratio <= 1, "from 0 to 1"),
        ("warmup_steps", config.warmup_steps >= 0, "0 or more"),
        ("weight_decay", config.weight_decay >= 0, "0 or more"),
        ("grad_clip", config.grad_clip >= 0, "0 (off) or more"),
        ("ema_decay", 0 <= config.ema_decay < 1, "from 0 (off) up to, not including, 1"),
        ("dropout", 0 <= config.dropout < 1, "from 0 up to, not including, 1"),
        ("max_steps", config.max_steps >= 0, "0 (no step limit) or more"),
        ("time", config.time >= 0, "0 (no time limit) or more"),
        ("epochs", config.epochs >= 0, "0 (no epoch limit) or more"),
        ("eval_every", config.eval_every >= 0, "0 (only at the end) or more"),
        ("save_every", config.save_every >= 0, "0 (only at the end) or more"),
        ("max_seq_len", config.max_seq_len >= 1, "at least 1"),
        ("gelu", config.gelu in GELUS, "'exact' or 'tanh'"),
    ]
    for name, ok, want in rules:
        if not ok:
            raise UserError(f"Setting {name} = {getattr(config, name)!r} is out of range: it must be {want}. "
                            f"Fix --{name.replace('_', '-')} or the config file.")


# --- batches ---


class Batches:
    """This process's share of each training batch.

    One sampler (dataloader.EpochSampler), seeded alike on every rank, picks batch_size x world_size
    windows; rank r keeps rows r, r + world_size, ... Together the ranks train on exactly the batch
    that one process with batch_size x world_size would, and the sampler's state is one thing to save
    and restore.
    """

    def __init__(self, tokens, batch_size: int, seq_len: int, ctx: distributed.Dist, device, seed: int):
        self.tokens, self.batch_size, self.seq_len, self.ctx, self.device = tokens, batch_size, seq_len, ctx, device
        self.sampler = EpochSampler(tokens, seq_len, seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        world, rank = self.ctx.world_size, self.ctx.rank
        starts = self.sampler.next(self.batch_size * world)[rank::world]  # (B,)
        return windows(self.tokens, starts, self.seq_len, self.device)  # (B, T) x 2


# --- what the user sees ---


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Status:
    step: int
    total_steps: int  # 0: the plan is a time budget
    epoch: float
    loss: float
    val_loss: float | None
    tokens_per_s: float
    progress: float
    eta: float | None  # seconds


class LogLines:
    """Progress as plain lines (when stdout is not a terminal): the first steps, then at most one line
    every few seconds, and the last step. Also the base of other displays: `update` gets a Status after
    every step, `note` a message."""

    def __init__(self, console, interval: float = 5.0):
        self.console, self.interval = console, interval
        self.last = -math.inf

    def line(self, s: Status) -> str:
        total = f"/{s.total_steps:,}" if s.total_steps else ""
        val = f" | val {s.val_loss:.4f}" if s.val_loss is not None else ""
        eta = f" | ETA {_duration(s.eta)}" if s.eta is not None else ""
        return (f"step {s.step:,}{total} | epoch {s.epoch:.2f} | loss {s.loss:.4f}{val} | "
                f"{s.tokens_per_s:,.0f} tok/s | {s.progress:.0%}{eta}")

    def update(self, s: Status) -> None:
        now = time.monotonic()
        if s.step <= 3 or s.progress >= 1.0 or now - self.last >= self.interval:
            self.console.print(self.line(s), highlight=False)
            self.last = now

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def close(self) -> None:
        pass


class LiveBar(LogLines):
    """A live progress bar on a terminal: epoch and step, loss, last validation loss, tokens/s, ETA.
    It appears with the first step (the tokenizer and the token cache show their own progress before);
    notes print above it."""

    def __init__(self, console):
        super().__init__(console)
        self.bar = None

    def update(self, s: Status) -> None:
        if self.bar is None:
            from rich.progress import BarColumn, Progress, TextColumn
            from rich.table import Column

            self.bar = Progress(BarColumn(bar_width=16, table_column=Column(min_width=16)),
                                TextColumn("{task.fields[text]}", table_column=Column(no_wrap=True)),
                                console=self.console)
            self.task = self.bar.add_task("train", total=1.0, text="")
            self.bar.start()
        # The most telling first: a narrow terminal cuts the end of the line.
        total = f"/{s.total_steps:,}" if s.total_steps else ""
        val = f"  val {s.val_loss:.4f}" if s.val_loss is not None else ""
        eta = f"  ETA {_duration(s.eta)}" if s.eta is not None else ""
        text = f"step {s.step:,}{total}  loss {s.loss:.4f}{val}{eta}  {s.tokens_per_s:,.0f} tok/s  epoch {s.epoch:.2f}"
        self.bar.update(self.task, completed=s.progress, text=text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- Ctrl-C ---


class StopRequest:
    """First Ctrl-C: ask the loop to stop after the current step (it then saves). Second: abort at once.

    Under torchrun, a terminal's Ctrl-C reaches each process twice, from the terminal and relayed by
    torchrun a moment later: a second SIGINT within `grace` seconds of the first counts as the same one."""

    def __init__(self, display, grace: float = 0.0):
        self.display, self.grace = display, grace
        self.requested = False
        self.first = 0.0
        self.previous = None

    def __enter__(self):
        with contextlib.suppress(ValueError):  # signals can only be caught in the main thread
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and time.monotonic() - self.first > self.grace:
            raise KeyboardInterrupt
        if self.requested:
            return
        self.requested, self.first = True, time.monotonic()
        self.display.note("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again aborts at once).")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# --- metrics.jsonl ---


class MetricsLog:
    """The metrics history in memory (it goes into every checkpoint) and in metrics.jsonl beside them.

    The file starts as the history so far (a resumed run's checkpoint holds its own), so it always
    matches the run being trained; each record is then appended with one write, whole or not at all."""

    def __init__(self, path: Path | None, history: list[dict]):
        self.history = list(history)
        self.fd = None
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def append(self, record: dict) -> None:
        self.history.append(record)
        if self.fd is not None:
            os.write(self.fd, (json.dumps(record) + "\n").encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- setting up: tokenizer, data, checkpoint ---


def ensure_tokenizer(home: Home, config: Config, books: Path, yes: bool, ctx: distributed.Dist):
    """The tokenizer this model uses; if there is none, train it when we may (--yes, or the user says so
    on a terminal), else say which command makes one. Under torchrun: --yes or an existing tokenizer."""
    from hellogpt.tokenizer import load_tokenizer, train_tokenizer

    path = tokenizer_path_for(home, config.model_name)
    if not path.is_file() and ctx.is_local_main:
        can_ask = sys.stdin.isatty() and not ctx.enabled
        if not (yes or can_ask):
            raise UserError(f"There is no tokenizer at {path}. Train one first with `hellogpt tokenizer train` "
                            "(add --data PATH for other books), or run `hellogpt train` again with --yes to "
                            "train it now.")
        from hellogpt.console import ask

        print(f"There is no tokenizer yet ({path}): training needs one to turn the books into tokens.")
        if not ask(f"Train a byte-level BPE tokenizer ({describe_vocab_size(config.vocab_size)}) on {books} now?",
                   yes):
            raise UserError("No tokenizer, so no training. Train one with `hellogpt tokenizer train`, then run "
                            "`hellogpt train` again.", exit_code=1)
        train_tokenizer(home, books, config.vocab_size, config.val_fraction)
    distributed.barrier(ctx)  # the other ranks on this machine wait for it
    return load_tokenizer(path)


def resumed_config(stored: Config, requested: Config, given: dict, note) -> Config:
    """The checkpoint's settings, with the session settings the user gave and this machine's settings;
    other settings the user gave are ignored, with a notice."""
    keep = SESSION_SETTINGS + MACHINE_SETTINGS + ("model_name",)
    ignored = [f"{k}={v!r} (the checkpoint has {getattr(stored, k)!r})" for k, v in given.items()
               if k not in keep and getattr(stored, k) != v]
    if ignored:
        note("--resume continues the model with the settings stored in its checkpoint; ignoring " +
             ", ".join(ignored) + ". To train with other settings, start a new model with --model-name NEW.")
    session = {k: v for k, v in given.items() if k in SESSION_SETTINGS}
    if any(k in given for k in RUN_LENGTH):  # a new length replaces the old one whole
        session = {**{f.name: f.default for f in fields(Config) if f.name in RUN_LENGTH}, **session}
    machine = {k: getattr(requested, k) for k in MACHINE_SETTINGS}
    return replace(stored, **session, **machine, model_name=requested.model_name)


def resumed_plan(ckpt: dict, config: Config, given: dict, train_tokens: int, tokens_per_step: int,
                 note) -> Plan:
    """The run's plan: the checkpoint's, or the one a newly given length asks for. A run already at its
    plan's end is extended by its length once more (another N steps, T seconds or E epochs)."""
    step, elapsed = ckpt["step"], ckpt.get("elapsed", 0.0)
    asked = plan_for(config, train_tokens, tokens_per_step)
    stored = (ckpt.get("scheduler") or {}).get("plan")  # imported weights (hf.py) have none
    plan = asked if any(k in given for k in RUN_LENGTH) or stored is None else Plan(**stored)
    if plan.progress(step, elapsed) < 1.0:
        return plan
    extended = Plan(step + asked.total_steps if asked.total_steps else 0,
                    elapsed + asked.time if asked.time else 0.0)
    note(f"The run had reached the end of its plan ({plan.describe()}) at step {step:,}; continuing it for "
         f"another {Plan(asked.total_steps, asked.time).describe()} (the learning rate follows the longer plan).")
    return extended


def describe_settings(config: Config) -> str:
    return " ".join(f"{k}={v}" for k, v in config.to_dict().items())


def prepare_device(device: torch.device, ctx: distributed.Dist) -> None:
    """The device's global settings for training, and on a CPU the number of threads (cpu_threads)."""
    setup_device(device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(ctx))


def cpu_threads(ctx: distributed.Dist) -> int:
    """One thread per core, the cores shared among the processes on this machine; OMP_NUM_THREADS,
    when set, decides instead."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // ctx.local_world_size)


# --- training ---


def train(config: Config, home: Home, data_path: Path, resume: bool = False, given: dict | None = None,
          yes: bool = False, display=None) -> TrainResult:
    """Train `config.model_name` on the books at `data_path` and return what happened.

    With resume, continue from the model's latest serial: the model and training settings come from that
    checkpoint, and of `given` (the settings the user set explicitly) only the session settings apply:
    run length, eval_every, save_every, device, compile. A new run on a time budget with no shape setting
    in `given` gets the size that suits this machine (sizing.py); given=None means a caller's own Config,
    which is trained as it is. `display` (default: a live bar on a terminal, plain lines otherwise)
    receives progress; see LogLines.
    """
    device = pick_device(config.device)
    ctx = distributed.init(device)
    try:
        result = _train(config, home, Path(data_path), resume, given, yes, display, device, ctx)
        # Every rank leaves together, once rank 0 has written its files: none closes its connections
        # while a peer may still be using them.
        distributed.barrier(ctx)
        return result
    finally:
        distributed.shutdown()


def _train(config, home, data_path, resume, given, yes, display, device, ctx) -> TrainResult:
    from rich.console import Console

    fit = not resume and not ctx.enabled and should_fit(given, config)  # sizing.py
    given = dict(given or {})

    console = Console(soft_wrap=True, quiet=not ctx.is_main)
    prepare_device(device, ctx)
    if display is None:
        display = LiveBar(console) if console.is_terminal and ctx.is_main else LogLines(console)
    model_dir = home.model_dir(config.model_name)

    ckpt, ckpt_path = None, None
    if resume:
        ckpt_path = locate(home.checkpoints_dir, config.model_name).path
        ckpt = load_checkpoint(ckpt_path)
        config = resumed_config(Config.from_dict(ckpt["config"]), config, given, display.note)
    elif serials(model_dir):
        display.note(f"Model '{config.model_name}' already has checkpoints (serials "
                     f"{', '.join(map(str, serials(model_dir)))}). This run starts a new model from step 0 and saves "
                     "it as the next serial; use --resume to continue the latest one instead, or --model-name to "
                     "keep the runs apart.")
    check_settings(config)

    tokenizer = ensure_tokenizer(home, config, data_path, yes, ctx)
    if ckpt is not None:
        check_tokenizer(ckpt, tokenizer, ckpt_path)
    else:
        if config.vocab_size and tokenizer.vocab_size != config.vocab_size:
            display.note(f"The tokenizer has a vocabulary of {tokenizer.vocab_size:,} (vocab_size "
                         f"{config.vocab_size:,} applies when a tokenizer is trained); the model uses the tokenizer's.")
        config = replace(config, vocab_size=tokenizer.vocab_size)  # stored with the model: what it was built with
    if not ctx.is_local_main:
        distributed.barrier(ctx)  # let the first rank on this machine build the token cache
    data: TokenData = prepare_tokens(home, data_path, tokenizer, config.val_fraction, show_progress=ctx.is_main)
    if ctx.is_local_main:
        distributed.barrier(ctx)
    seen = distributed.gather((tokenizer.fingerprint, data.fingerprint), ctx)
    if len(set(seen)) > 1:
        raise UserError("The processes found different tokenizers or books on their machines: "
                        f"{sorted(set(seen))}. Give every machine the same tokenizer.json and books.")
    if ckpt is not None and ckpt.get("data_fingerprint") not in (None, data.fingerprint):
        display.note(f"The books at {data_path} differ from those the checkpoint was trained on; continuing on "
                     "these books (the run will not repeat what it would have done on the old ones).")

    if fit:
        config = fit_size(config, len(data.train), tokenizer.vocab_size, device, display.note)

    # The model: built from the checkpoint's stored configuration, or anew with the seed.
    torch.manual_seed(config.seed)
    raw = build_model(ckpt) if ckpt is not None else GPT(config.model_config(tokenizer.vocab_size))
    raw.to(device)
    averaged = WeightAverage(raw, config.ema_decay)
    optimizer = make_optimizer(raw, config)
    T = raw.config.max_seq_len
    batches = Batches(data.train, config.batch_size, T, ctx, device, seed=config.seed)
    torch.manual_seed(config.seed + ctx.rank)  # dropout: each rank its own masks
    tokens_per_step = config.tokens_per_step(ctx.world_size)  # config's context is the model's (T)
    step, elapsed_before, history = 0, 0.0, []
    if ckpt is not None:
        averaged.restore(ckpt)
        try:
            optimizer.load_state_dict(ckpt["optimizer"] or {})
        except (KeyError, ValueError):  # imported weights (hf.py) or another optimizer: nothing to continue
            display.note(f"{ckpt_path} has no state for the {config.optimizer} optimizer; it starts afresh "
                         "(the first steps may move the weights more than an uninterrupted run would).")
        if ckpt.get("rng"):  # imported weights (hf.py) have none
            restore_rng(ckpt["rng"], batches.sampler, device, ctx)
        step, elapsed_before, history = ckpt["step"], ckpt.get("elapsed", 0.0), ckpt.get("metrics", [])
        plan = resumed_plan(ckpt, config, given, len(data.train), tokens_per_step, display.note)
    else:
        plan = plan_for(config, len(data.train), tokens_per_step)
    del ckpt  # its tensors are in the model and optimizer now

    model = DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.enabled else raw
    runner = model
    if config.compile:
        runner = torch.compile(model)

    threads = torch.get_num_threads()
    threads = f", {threads} thread{'s' if threads > 1 else ''}" if device.type == "cpu" else ""
    processes = f", {ctx.world_size} processes" if ctx.enabled else ""
    display.note(f"{'Resuming' if resume else 'Training'} '{config.model_name}' at step {step:,} on {device}"
                 f"{threads}{processes}: {raw.num_params():,} parameters, {tokens_per_step:,} tokens per step, "
                 f"{len(data.train):,} training tokens, plan {plan.describe()}.")
    display.note(f"Settings: {describe_settings(config)}")

    can_eval = num_windows(data.val, T) > 0
    if not can_eval:
        display.note(f"The validation split has fewer than {T + 1} tokens, so there is no evaluation; raise "
                     "--val-fraction or add books to get validation losses.")
    metrics = MetricsLog(model_dir / METRICS_FILE if ctx.is_main else None, history)

    def run_eval() -> EvalResult:
        local = evaluate(averaged.current(), data.val, tokenizer, T, config.batch_size, device, ctx.rank,
                         ctx.world_size)
        nll, n_tokens, n_bytes = distributed.all_sum([local.nll, local.tokens, local.bytes], ctx, device)
        result = EvalResult(nll, int(n_tokens), int(n_bytes))
        metrics.append({"split": "val", "step": step, "loss": result.loss, "perplexity": result.perplexity,
                        "bits_per_byte": result.bits_per_byte})
        display.note(f"step {step:,}: validation loss {result.loss:.4f}, perplexity {result.perplexity:.2f}, "
                     f"{result.bits_per_byte:.4f} bits per byte")
        return result

    def save() -> Path | None:
        payload = {
            **averaged.checkpoint(),  # "model": the weights to keep (and "live" ones to resume)
            "model_config": raw.config.to_dict(),
            "config": config.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"plan": {"total_steps": plan.total_steps, "time": plan.time}},  # the rates follow from it
            "step": step,
            "epoch": step * tokens_per_step / len(data.train),
            "tokens_seen": step * tokens_per_step,
            "elapsed": elapsed,
            "tokenizer_fingerprint": tokenizer.fingerprint,
            "data_fingerprint": data.fingerprint,
            "rng": rng_state(batches.sampler, device, ctx),  # every rank takes part
            "metrics": metrics.history,
        }
        if not ctx.is_main:
            return None
        try:
            return save_checkpoint(model_dir, payload)
        except OSError as e:
            raise UserError(f"Could not save a checkpoint in {model_dir} ({e.strerror or e}). Free some disk "
                            "space or fix the folder's permissions, then run again with --resume.")

    train_step = functools.partial(optimizer_step, model=model, optimizer=optimizer, next_batch=batches.next,
                                   grad_accum=config.grad_accum, grad_clip=config.grad_clip, device=device)

    session_start_step, train_seconds, last_eval, saved = step, 0.0, None, None
    interrupted = False
    rate = 0.0  # tokens/s, smoothed
    elapsed = elapsed_before
    loop_start = time.perf_counter()
    try:
        with StopRequest(display, grace=1.0 if ctx.enabled else 0.0) as stop:
            while plan.progress(step, elapsed) < 1.0:
                factor = lr_factor(config, step, plan.progress(step, elapsed))
                optimizer.set_lr(factor)
                t0 = time.perf_counter()
                if runner is not model and step == session_start_step:
                    loss, runner = first_compiled_step(train_step, runner, model, batches, display)
                else:
                    loss = train_step(runner)
                # One all-reduce for both: the loss averaged over the ranks, and whether any saw Ctrl-C.
                loss_sum, stops = distributed.all_sum([loss, float(stop.requested)], ctx, device)
                loss = loss_sum / ctx.world_size
                dt = time.perf_counter() - t0
                step += 1
                train_seconds += dt
                rate = tokens_per_step / dt if rate == 0 else 0.9 * rate + 0.1 * tokens_per_step / dt
                elapsed = elapsed_before + time.perf_counter() - loop_start
                epoch = step * tokens_per_step / len(data.train)
                metrics.append({"split": "train", "step": step, "epoch": epoch, "tokens": step * tokens_per_step,
                                "elapsed": elapsed, "lr": config.lr * factor, "loss": loss, "tokens_per_s": rate})
                progress = plan.progress(step, elapsed)
                averaged.update(progress)
                session_progress = progress - plan.progress(session_start_step, elapsed_before)
                eta = (elapsed - elapsed_before) * (1 - progress) / session_progress if session_progress else None
                display.update(Status(step, plan.total_steps, epoch, loss, last_eval.loss if last_eval else None,
                                      rate, progress, eta))
                if stops:
                    interrupted = True
                    break
                if can_eval and config.eval_every and step % config.eval_every == 0 and progress < 1.0:
                    last_eval = run_eval()
                if config.save_every and step % config.save_every == 0 and progress < 1.0:
                    saved = save()
                    display.note(f"Saved {saved}")
                elapsed = elapsed_before + time.perf_counter() - loop_start

            if not interrupted and can_eval:
                last_eval = run_eval()
            saved = save()
    finally:
        display.close()
        metrics.close()

    tokens = (step - session_start_step) * tokens_per_step
    result = TrainResult(step, step - session_start_step, tokens, train_seconds,
                         tokens / train_seconds if train_seconds else 0.0,
                         last_eval.loss if last_eval else None, last_eval.bits_per_byte if last_eval else None,
                         saved, interrupted)
    if ctx.is_main:
        plot = plot_loss_curve(metrics.history, model_dir / PLOT_FILE, f"HelloGPT '{config.model_name}'")
        print_summary(console, result, config, plot)
    return result


def optimizer_step(runner, model, optimizer, next_batch, grad_accum: int, grad_clip: float, device) -> float:
    """One optimizer step (see the top of this file); returns this process's mean loss over its micro-batches.

    runner computes the loss: the model, or its torch.compile'd form. model is the module itself, plain or
    DistributedDataParallel, whose no_sync() skips averaging gradients across processes until the last
    micro-batch. next_batch() gives (x, y), (B, T) each."""
    loss_sum = torch.zeros((), device=device)
    for micro in range(grad_accum):
        x, y = next_batch()
        sync = micro == grad_accum - 1 or not isinstance(model, DistributedDataParallel)
        with contextlib.nullcontext() if sync else model.no_sync():
            with autocast(device):
                _, loss = runner(x, y, return_logits=False)  # the chunked head and loss (loss.py)
            (loss / grad_accum).backward()  # gradients add up over the micro-batches
        loss_sum += loss.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum.item() / grad_accum


def first_compiled_step(train_step, runner, model, batches, display):
    """The first step with torch.compile, which is when compiling happens; if it fails, warn and train
    without it, the step redone from the same random state."""
    rng, batch_rng = torch.get_rng_state(), batches.sampler.state_dict()
    try:
        return train_step(runner), runner
    except Exception as e:  # compilers fail in many ways (no C++ compiler, unsupported op, ...)
        reason = str(e).splitlines()[0] if str(e) else ""
        display.note(f"warning: torch.compile failed ({type(e).__name__}: {reason}); training without it.")
        torch.set_rng_state(rng)
        batches.sampler.load_state_dict(batch_rng)
        model.zero_grad(set_to_none=True)
        return train_step(model), model


def rng_state(sampler: EpochSampler, device: torch.device, ctx: distributed.Dist) -> dict:
    """Every random state the run draws from: each rank's CPU (and CUDA) generator for dropout, and the
    shared batch sampler. Tensors, numbers and lists only, so that weights_only loading accepts them."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    states = distributed.gather((torch.get_rng_state(), cuda), ctx)
    return {
        "torch": [cpu for cpu, _ in states],
        "cuda": [c for _, c in states if c is not None],
        "batches": sampler.state_dict(),
    }


def restore_rng(rng: dict, sampler: EpochSampler, device: torch.device, ctx: distributed.Dist) -> None:
    sampler.load_state_dict(rng["batches"])
    torch.set_rng_state(rng["torch"][ctx.rank % len(rng["torch"])])
    if device.type == "cuda" and rng["cuda"]:
        torch.cuda.set_rng_state(rng["cuda"][ctx.rank % len(rng["cuda"])], device)


def print_summary(console, result: TrainResult, config: Config, plot: Path) -> None:
    how = "Stopped by Ctrl-C" if result.interrupted else "Done"
    console.print(f"{how}: {result.session_steps:,} steps this run ({result.steps:,} in total), "
                  f"{result.tokens:,} tokens in {_duration(result.seconds)} of training, "
                  f"{result.tokens_per_s:,.0f} tokens/s.", highlight=False)
    if result.val_loss is not None:
        console.print(f"Validation: loss {result.val_loss:.4f}, perplexity {math.exp(result.val_loss):.2f}, "
                      f"{result.val_bpb:.4f} bits per byte.", highlight=False)
    console.print(f"Checkpoint: {result.checkpoint}", highlight=False)
    console.print(f"Loss curve: {plot}; metrics: {plot.with_name(METRICS_FILE)}", highlight=False)
    if result.interrupted:
        console.print(f"Continue with `hellogpt train --model-name {config.model_name} --resume`.", highlight=False)


def run_cli(args, home: Home) -> int:
    """`hellogpt train`: exit code 0 when the plan is done, 130 when Ctrl-C stopped it (after saving)."""
    given = given_settings_from_args(args)
    result = train(Config(**given), home, books_path(home, args.data), resume=args.resume, given=given,
                   yes=bool(args.yes))
    return 130 if result.interrupted else 0
