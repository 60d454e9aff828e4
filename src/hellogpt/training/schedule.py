"""How long a run is (its plan) and how the learning rates follow it.

The run's length is a plan: --time SECONDS (120 when nothing else is given), --max-steps N or
--epochs E (passes over the training tokens); with several given, the first limit reached ends it.
The learning-rate schedule follows the plan's progress (for a time budget: the elapsed time), so the
model at the end is the one the whole budget was planned for.

`--resume` continues a run with its checkpoint's settings and plan; only the session settings below
may change, and a run already at its plan's end is extended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from hellogpt.core.settings import RUN_LENGTH, Config

# --resume takes these from the command line when given; every other setting comes from the checkpoint.
SESSION_SETTINGS = RUN_LENGTH + ("eval_every", "save_every")
MACHINE_SETTINGS = ("device", "compile")  # this machine's: always from the command line (or the defaults)


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

    def time_leads(self, step: int, elapsed: float) -> bool:
        """Whether the time budget, not a step total, is the limit the run is nearest to."""
        return bool(self.time) and (not self.total_steps or elapsed / self.time >= step / self.total_steps)

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
    two-minute task the straight line beat nanoGPT's cosine (benchmarks/RESULTS.md): it keeps the
    rates higher for longer, and the weights' average (averaging.py) smooths what that stirs up."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return warmup * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * (1.0 - progress))


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
    """The run's plan: the checkpoint's, or the one a newly given length asks for (the run's new total).
    When the run is already past that plan's end, it is extended by the plan's length once more (another
    N steps, T seconds or E epochs)."""
    step, elapsed = ckpt["step"], ckpt.get("elapsed", 0.0)
    asked = plan_for(config, train_tokens, tokens_per_step)
    stored = (ckpt.get("scheduler") or {}).get("plan")  # imported weights (hf.py) have none
    new_length = any(k in given for k in RUN_LENGTH) or stored is None
    plan = asked if new_length else Plan(**stored)
    if plan.progress(step, elapsed) < 1.0:
        return plan
    extended = Plan(step + asked.total_steps if asked.total_steps else 0,
                    elapsed + asked.time if asked.time else 0.0)
    done = f"{step:,} steps and {elapsed:,.0f} s"
    if new_length:
        note(f"The run has already trained {done}, past the length asked for ({asked.describe()}); "
             f"continuing it for that length again, to {extended.describe()} in all.")
    else:
        note(f"The run had reached the end of its plan ({plan.describe()}) with {done}; continuing it for "
             f"another {asked.describe()}, to {extended.describe()} in all (the learning rate follows the "
             "longer plan).")
    return extended
