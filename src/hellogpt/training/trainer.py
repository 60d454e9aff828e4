"""Training: `train()` runs one training run in three parts, setup, loop and finish.

    setup    the checkpoint to resume (if any), the tokenizer and the token cache, the model's size,
             the model, optimizer, weight average and batches, restored exactly from a checkpoint
    loop     until the plan's end: set the learning rates, one optimizer step (step.py), fold the
             weights into their average (averaging.py), evaluate every eval_every steps
    finish   evaluate, save the next serial, draw the loss curve

Every checkpoint (artifacts/checkpoints/<model_name>/serial_<N>.pt) holds what is needed to
continue exactly where it stopped: model, optimizer, plan, step, settings, fingerprints, RNG
states, metrics. Checkpoints are written at the end, every --save-every steps, and when Ctrl-C,
SIGTERM or SIGHUP (a scheduler's or a closed terminal's stop) asks the run to stop.
`--resume` rebuilds everything from the latest serial and continues the same run: stopping and
resuming gives the same losses as never stopping.

Under torchrun, each process trains on its share of every batch with DistributedDataParallel
(core/distributed.py); rank 0 alone writes files. Progress goes to a Reporter, never to the
terminal: the application draws it (app/progress.py).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from hellogpt.core import distributed
from hellogpt.core.device import pick_device, setup_device
from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.core.settings import Config
from hellogpt.data.tokenizer import Tokenizer, load_tokenizer
from hellogpt.data.tokens import TokenData, num_windows, prepare_tokens
from hellogpt.model.checkpoint import (
    build_model,
    check_tokenizer,
    gpt_config,
    load_checkpoint,
    locate,
    save_checkpoint,
    serials,
    tokenizer_path_for,
)
from hellogpt.model.gpt import GPT
from hellogpt.training.averaging import WeightAverage
from hellogpt.training.evaluate import EvalResult, evaluate
from hellogpt.training.metrics import METRICS_FILE, PLOT_FILE, MetricsLog, plot_loss_curve
from hellogpt.training.optim import Optimizers, make_optimizer
from hellogpt.training.schedule import Plan, lr_factor, plan_for, resumed_config, resumed_plan
from hellogpt.training.sizing import fit_size, should_fit
from hellogpt.training.step import Batches, first_compiled_step, optimizer_step, restore_rng, rng_state


@dataclass
class TrainResult:
    model_name: str
    steps: int  # optimizer steps of the model so far (all runs)
    session_steps: int  # of this run
    tokens: int  # tokens trained on in this run (all processes)
    seconds: float  # of training steps in this run (evaluations and saves excluded)
    tokens_per_s: float
    val_loss: float | None  # the last evaluation of this run
    val_bpb: float | None
    checkpoint: Path | None  # the serial written last (None on ranks other than 0)
    plot: Path | None  # the loss curve (None on ranks other than 0)
    stopped_by: int  # the signal that stopped the run before its plan's end (SIGINT: Ctrl-C), 0 if none

    @property
    def interrupted(self) -> bool:
        return bool(self.stopped_by)


@dataclass
class Status:
    """The run after a step, for a progress display."""

    step: int
    total_steps: int  # 0: no step total
    epoch: float
    loss: float
    val_loss: float | None
    tokens_per_s: float
    progress: float  # 0 to 1
    eta: float | None  # seconds
    elapsed: float  # seconds of training, all sessions
    time_budget: float  # the plan's seconds when time is the limit the run is nearest to, else 0


class Reporter:
    """Where a run reports: `update` after every step, `note` for everything else, `tokenizing` while the
    token cache is built. This one discards everything; the application passes its own."""

    def update(self, status: Status) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def tokenizing(self, done: int, total: int) -> None:
        pass

    def retry_save(self, message: str) -> bool:
        """A save failed (message says why): whether to try again. The run's state is still in memory."""
        return False

    def close(self) -> None:
        pass


STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class StopRequest:
    """First Ctrl-C (or SIGTERM, SIGHUP): ask the loop to stop after the current step (it then saves).
    A second one: abort at once.

    Under torchrun, a terminal's Ctrl-C reaches each process twice, from the terminal and relayed by
    torchrun a moment later: a second signal within `grace` seconds of the first counts as the same one."""

    def __init__(self, note: Callable[[str], None], grace: float = 0.0):
        self.note, self.grace = note, grace
        self.signal = 0  # the first stop signal received
        self.first = 0.0
        self.previous: dict = {}

    @property
    def requested(self) -> bool:
        return bool(self.signal)

    def __enter__(self):
        with contextlib.suppress(ValueError):  # signals can only be caught in the main thread
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and time.monotonic() - self.first > self.grace:
            raise KeyboardInterrupt
        if self.requested:
            return
        self.signal, self.first = signum, time.monotonic()
        self.note(f"{STOP_SIGNALS[signum]}: stopping after this step and saving a checkpoint (a second Ctrl-C "
                  "aborts at once).")

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


@dataclass
class Run:
    """A run between setup and finish: what it trains, with what, and how far it has come."""

    config: Config
    ctx: distributed.Dist
    device: torch.device
    model_dir: Path
    raw: GPT  # the model itself
    model: torch.nn.Module  # raw, or raw wrapped in DistributedDataParallel
    runner: torch.nn.Module  # model, or its torch.compile'd form
    averaged: WeightAverage
    optimizer: Optimizers
    batches: Batches
    tokenizer: Tokenizer
    data: TokenData
    plan: Plan
    metrics: MetricsLog
    reporter: Reporter
    step: int  # optimizer steps so far, all sessions
    elapsed: float  # seconds of training so far, all sessions

    @property
    def tokens_per_step(self) -> int:
        return self.config.tokens_per_step(self.ctx.world_size)

    @property
    def can_eval(self) -> bool:
        return num_windows(self.data.val, self.raw.config.max_seq_len) > 0


def train(config: Config, home: Home, data_path: Path, resume: bool = False, given: dict | None = None,
          reporter: Reporter | None = None,
          get_tokenizer: Callable[[Config, Path], Tokenizer] | None = None) -> TrainResult:
    """Train `config.model_name` on the books at `data_path` and return what happened.

    With resume, continue from the model's latest serial: the model and training settings come from that
    checkpoint, and of `given` (the settings the user set explicitly) only the session settings apply
    (schedule.py). A new run on a time budget with no shape setting in `given` gets the size that suits
    this machine (sizing.py); given=None means a caller's own Config, trained as it is. get_tokenizer
    (config, tokenizer path) gives the tokenizer when there is none yet (the application asks and trains
    one); without it, a missing tokenizer is an error.
    """
    device = pick_device(config.device)
    ctx = distributed.init(device)
    try:
        run = _setup(config, home, Path(data_path), resume, given, reporter or Reporter(), get_tokenizer,
                     device, ctx)
        try:
            # A Ctrl-C during the final evaluation or save is a request to stop too: it never loses the run.
            with StopRequest(run.reporter.note, grace=1.0 if ctx.enabled else 0.0) as stop:
                result = _finish(run, *_loop(run, stop))
        finally:
            run.reporter.close()
            run.metrics.close()
        # Every rank leaves together, once rank 0 has written its files: none closes its connections
        # while a peer may still be using them.
        distributed.barrier(ctx)
        return result
    finally:
        distributed.shutdown()


# --- setup ---


def _setup(config, home, data_path, resume, given, reporter, get_tokenizer, device, ctx) -> Run:
    fit = not resume and not ctx.enabled and should_fit(given, config)  # sizing.py
    given = dict(given or {})
    setup_device(device, ctx.local_world_size)
    ckpt, ckpt_path = None, None
    if resume:
        ckpt_path = locate(home, config.model_name).path
        ckpt = load_checkpoint(ckpt_path)
        config = resumed_config(Config.from_dict(ckpt["config"]), config, given, reporter.note)
    elif serials(home.model_dir(config.model_name)):
        reporter.note(f"Model '{config.model_name}' already has checkpoints (serials "
                      f"{', '.join(map(str, serials(home.model_dir(config.model_name))))}). This run starts a new "
                      "model from step 0 and saves it as the next serial; use --resume to continue the latest one "
                      "instead, or --model-name to keep the runs apart.")
    tokenizer = _tokenizer(home, config, data_path, get_tokenizer, ctx)
    if ckpt is not None:
        check_tokenizer(ckpt, tokenizer, ckpt_path)
    else:
        if config.vocab_size and tokenizer.vocab_size != config.vocab_size:
            reporter.note(f"The tokenizer has a vocabulary of {tokenizer.vocab_size:,} (vocab_size "
                          f"{config.vocab_size:,} applies when a tokenizer is trained); the model uses the "
                          "tokenizer's.")
        config = replace(config, vocab_size=tokenizer.vocab_size)  # stored with the model: what it was built with
    data = _token_data(home, data_path, tokenizer, config.val_fraction, ctx, reporter)
    if ckpt is not None and ckpt.get("data_fingerprint") not in (None, data.fingerprint):
        reporter.note(f"The books at {data_path} differ from those the checkpoint was trained on; continuing on "
                      "these books (the run will not repeat what it would have done on the old ones).")
    if fit:
        config = fit_size(config, len(data.train), tokenizer.vocab_size, device, reporter.note)
    return _build(config, home, ckpt, ckpt_path, given, tokenizer, data, reporter, device, ctx)


def _tokenizer(home: Home, config: Config, books: Path, get_tokenizer, ctx: distributed.Dist) -> Tokenizer:
    """The model's tokenizer. When there is none, the first process on each machine gets one from
    get_tokenizer while the others wait for it."""
    path = tokenizer_path_for(home, config.model_name)
    if not path.is_file() and get_tokenizer is None:  # every process sees it, so all stop alike
        raise UserError(f"There is no tokenizer at {path}. Train one first with `hellogpt tokenizer train` "
                        "(add --data PATH for other books), or run `hellogpt train` again with --yes to "
                        "train it now.")
    if not path.is_file() and ctx.is_local_main:
        get_tokenizer(config, books)
    distributed.barrier(ctx)  # the other ranks on this machine wait for it
    return load_tokenizer(path)


def _token_data(home, data_path, tokenizer, val_fraction, ctx, reporter) -> TokenData:
    """The books as tokens, built once per machine: the first process builds the cache, the others wait
    and then read it. Every process must have the same tokenizer and books."""
    if not ctx.is_local_main:
        distributed.barrier(ctx)
    data = prepare_tokens(home, data_path, tokenizer, val_fraction,
                          on_progress=reporter.tokenizing if ctx.is_main else None)
    if ctx.is_local_main:
        distributed.barrier(ctx)
    seen = distributed.gather((tokenizer.fingerprint, data.fingerprint), ctx)
    if len(set(seen)) > 1:
        raise UserError("The processes found different tokenizers or books on their machines: "
                        f"{sorted(set(seen))}. Give every machine the same tokenizer.json and books.")
    return data


def _build(config, home, ckpt, ckpt_path, given, tokenizer, data, reporter, device, ctx) -> Run:
    """The model, optimizer, average and batches: new from the seed, or exactly as the checkpoint left them."""
    torch.manual_seed(config.seed)
    raw = build_model(ckpt, ckpt_path) if ckpt is not None else GPT(gpt_config(config, tokenizer.vocab_size))
    raw.to(device)
    averaged = WeightAverage(raw, config.ema_decay)
    optimizer = make_optimizer(raw, config)
    batches = Batches(data.train, config.batch_size, raw.config.max_seq_len, ctx, device, seed=config.seed)
    torch.manual_seed(config.seed + ctx.rank)  # dropout: each rank its own masks
    tokens_per_step = config.tokens_per_step(ctx.world_size)
    step, elapsed, history = 0, 0.0, []
    if ckpt is not None:
        averaged.restore(ckpt)
        try:
            optimizer.load_state_dict(ckpt["optimizer"] or {})
        except (KeyError, ValueError):  # imported weights (hf.py) or another optimizer: nothing to continue
            reporter.note(f"{ckpt_path} has no state for the {config.optimizer} optimizer; it starts afresh "
                          "(the first steps may move the weights more than an uninterrupted run would).")
        if ckpt.get("rng"):  # imported weights (hf.py) have none
            restore_rng(ckpt["rng"], batches.sampler, device, ctx)
        step, elapsed, history = ckpt["step"], ckpt.get("elapsed", 0.0), ckpt.get("metrics", [])
        plan = resumed_plan(ckpt, config, given, len(data.train), tokens_per_step, reporter.note)
    else:
        plan = plan_for(config, len(data.train), tokens_per_step)
    model = DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.enabled else raw
    model_dir = home.model_dir(config.model_name)
    run_id = (ckpt or {}).get("run_id") or os.urandom(4).hex()  # one id for a model and its resumed runs
    metrics = MetricsLog(model_dir / METRICS_FILE if ctx.is_main else None, history, run_id)
    run = Run(config, ctx, device, model_dir, raw, model, torch.compile(model) if config.compile else model,
              averaged, optimizer, batches, tokenizer, data, plan, metrics, reporter, step, elapsed)
    _announce(run, resumed=ckpt is not None)
    return run


def _announce(run: Run, resumed: bool) -> None:
    threads = torch.get_num_threads()
    threads = f", {threads} thread{'s' if threads > 1 else ''}" if run.device.type == "cpu" else ""
    processes = f", {run.ctx.world_size} processes" if run.ctx.enabled else ""
    run.reporter.note(
        f"{'Resuming' if resumed else 'Training'} '{run.config.model_name}' at step {run.step:,} on {run.device}"
        f"{threads}{processes}: {run.raw.num_params():,} parameters, {run.tokens_per_step:,} tokens per step, "
        f"{len(run.data.train):,} training tokens, plan {run.plan.describe()}.")
    run.reporter.note("Settings: " + " ".join(f"{k}={v}" for k, v in run.config.to_dict().items()))
    if not run.can_eval:
        run.reporter.note(f"The validation split has fewer than {run.raw.config.max_seq_len + 1} tokens, so there "
                          "is no evaluation; raise --val-fraction or add books to get validation losses.")


# --- the loop ---


def _loop(run: Run, stop: StopRequest) -> tuple[int, float, EvalResult | None, Path | None, int]:
    """Train to the plan's end or a stop signal; returns (steps this session, seconds of steps, the last
    evaluation, the serial saved last, the signal that stopped it or 0)."""
    config, ctx = run.config, run.ctx
    train_step = functools.partial(optimizer_step, model=run.model, optimizer=run.optimizer,
                                   next_batch=run.batches.next, grad_accum=config.grad_accum,
                                   grad_clip=config.grad_clip, device=run.device)
    first_step, elapsed_before, train_seconds, rate = run.step, run.elapsed, 0.0, 0.0
    last_eval, saved, stopped_by = None, None, 0
    loop_start = time.perf_counter()
    while run.plan.progress(run.step, run.elapsed) < 1.0:
        factor = lr_factor(config, run.step, run.plan.progress(run.step, run.elapsed))
        run.optimizer.set_lr(factor)
        t0 = time.perf_counter()
        if run.runner is not run.model and run.step == first_step:
            loss, run.runner = first_compiled_step(train_step, run.runner, run.model, run.batches, run.reporter.note)
        else:
            loss = train_step(run.runner)
        # One all-reduce for both: the loss averaged over the ranks, and whether any was asked to stop.
        loss_sum, stops = distributed.all_sum([loss, float(stop.requested)], ctx, run.device)
        _check_finite(run, loss_sum / ctx.world_size)
        dt = time.perf_counter() - t0
        run.step += 1
        train_seconds += dt
        rate = run.tokens_per_step / dt if rate == 0 else 0.9 * rate + 0.1 * run.tokens_per_step / dt
        run.elapsed = elapsed_before + time.perf_counter() - loop_start
        progress = _after_step(run, loss_sum / ctx.world_size, factor, rate, last_eval, first_step, elapsed_before)
        if stops:
            stopped_by = stop.signal or signal.SIGTERM  # another process was the one signalled
            break
        if run.can_eval and config.eval_every and run.step % config.eval_every == 0 and progress < 1.0:
            last_eval = _evaluate(run)
        if config.save_every and run.step % config.save_every == 0 and progress < 1.0:
            saved = _save(run)
            run.reporter.note(f"Saved {saved}")
        run.elapsed = elapsed_before + time.perf_counter() - loop_start
    return run.step - first_step, train_seconds, last_eval, saved, stopped_by


def _check_finite(run: Run, loss: float) -> None:
    """Stop at once when the loss is no longer a number: the weights are lost, and saving them would put
    a broken model in place of the latest serial."""
    if math.isfinite(loss):
        return
    latest = serials(run.model_dir)
    kept = f"the latest serial is still {latest[-1]}" if latest else "no checkpoint of this model was written"
    raise UserError(f"The training loss became {loss} at step {run.step + 1:,}: the run diverged, most likely "
                    f"because a learning rate is too high for this model (lr {run.config.lr:g}, muon_lr "
                    f"{run.config.muon_lr:g}). Nothing of this run was saved from then on ({kept}); try lower "
                    "--lr / --muon-lr, or --grad-clip 1.0.")


def _after_step(run: Run, loss: float, factor: float, rate: float, last_eval: EvalResult | None,
                first_step: int, elapsed_before: float) -> float:
    """Record the step, fold the weights into their average, report; returns the run's progress."""
    epoch = run.step * run.tokens_per_step / len(run.data.train)
    run.metrics.append({"split": "train", "step": run.step, "epoch": epoch, "tokens": run.step * run.tokens_per_step,
                        "elapsed": run.elapsed, "lr": run.config.lr * factor, "loss": loss, "tokens_per_s": rate})
    progress = run.plan.progress(run.step, run.elapsed)
    run.averaged.update(progress)
    session_progress = progress - run.plan.progress(first_step, elapsed_before)
    eta = (run.elapsed - elapsed_before) * (1 - progress) / session_progress if session_progress else None
    time_budget = run.plan.time if run.plan.time_leads(run.step, run.elapsed) else 0.0
    run.reporter.update(Status(run.step, run.plan.total_steps, epoch, loss, last_eval.loss if last_eval else None,
                               rate, progress, eta, run.elapsed, time_budget))
    return progress


def _evaluate(run: Run) -> EvalResult:
    """Validation loss of the weights we keep, summed over every process's share of the windows."""
    local = evaluate(run.averaged.current(), run.data.val, run.tokenizer, run.raw.config.max_seq_len,
                     run.config.batch_size, run.device, run.ctx.rank, run.ctx.world_size)
    nll, n_tokens, n_bytes = distributed.all_sum([local.nll, local.tokens, local.bytes], run.ctx, run.device)
    result = EvalResult(nll, int(n_tokens), int(n_bytes))
    run.metrics.append({"split": "val", "step": run.step, "loss": result.loss, "perplexity": result.perplexity,
                        "bits_per_byte": result.bits_per_byte})
    run.reporter.note(f"step {run.step:,}: validation loss {result.loss:.4f}, perplexity {result.perplexity:.2f}, "
                      f"{result.bits_per_byte:.4f} bits per byte")
    return result


def _save(run: Run) -> Path | None:
    """The next serial (rank 0 writes it; every rank takes part in gathering the random states). When
    the save fails, the trained state stays in memory and the reporter may ask for another try."""
    payload = {
        **run.averaged.checkpoint(),  # "model": the weights to keep (and "live" ones to resume)
        "model_config": run.raw.config.to_dict(),
        "config": run.config.to_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": {"plan": {"total_steps": run.plan.total_steps, "time": run.plan.time}},  # rates follow from it
        "step": run.step,
        "epoch": run.step * run.tokens_per_step / len(run.data.train),
        "tokens_seen": run.step * run.tokens_per_step,
        "elapsed": run.elapsed,
        "tokenizer_fingerprint": run.tokenizer.fingerprint,
        "data_fingerprint": run.data.fingerprint,
        "rng": rng_state(run.batches.sampler, run.device, run.ctx),
        "run_id": run.metrics.run_id,
        "metrics": run.metrics.history,
    }
    if not run.ctx.is_main:
        return None
    while True:
        try:
            path = save_checkpoint(run.model_dir, payload)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            message = save_failure(run.model_dir, e)
            if run.reporter.retry_save(message):
                continue
            raise UserError(message + " This run's training since its last checkpoint is lost.") from None
        run.metrics.append({"split": "checkpoint", "step": run.step, "serial": int(path.stem.split("_")[1])})
        return path


def save_failure(folder: Path, error: Exception) -> str:
    """What went wrong with a save, in one sentence a user can act on."""
    reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
        if free < 64 << 20 or getattr(error, "errno", None) == errno.ENOSPC:
            reason = f"no space left on the disk ({free / 1e6:.0f} MB free)"
    return (f"Could not save a checkpoint in {folder}: {reason}. Free some space or fix the folder's permissions "
            "(nothing half-written was left there).")


# --- finish ---


def _finish(run: Run, session_steps: int, seconds: float, last_eval: EvalResult | None, saved: Path | None,
            stopped_by: int) -> TrainResult:
    """The final evaluation and checkpoint (when a signal stopped the run: the checkpoint alone), and the
    loss curve."""
    if not stopped_by and run.can_eval:
        last_eval = _evaluate(run)
    saved = _save(run)
    plot = None
    if run.ctx.is_main:
        plot = plot_loss_curve(run.metrics.history, run.model_dir / PLOT_FILE, f"HelloGPT '{run.config.model_name}'")
    tokens = session_steps * run.tokens_per_step
    return TrainResult(run.config.model_name, run.step, session_steps, tokens, seconds,
                       tokens / seconds if seconds else 0.0, last_eval.loss if last_eval else None,
                       last_eval.bits_per_byte if last_eval else None, saved, plot, stopped_by)
