"""The model's size for a run on a time budget: the largest that still sees enough tokens.

In a fixed time a bigger model learns more from each token but sees fewer of them, and a book has only
so many: ten passes over Alice in Wonderland are 380 k tokens, whatever the machine. So the best size
depends on this machine's speed and on the books. Before such a run HelloGPT times one training step of
each size on the device itself, smallest first, and keeps the largest size whose run would see at least
TOKENS_PER_PARAMETER tokens per parameter: the tokens that fit in the time budget at the timed speed,
or fewer if the run's epoch cap comes first.

Measured on the reference task and Alice in Wonderland (benchmarks/RESULTS.md), in tokens per parameter
as this timing estimates them: where size 4 sees 1.7 in two minutes (a 2-core CPU with bfloat16) it was
the best size tried; where it sees 0.6 to 0.9 (a 2-core CPU without, at half the speed) size 3 scores 0.03
to 0.06 bits per byte better; on Alice, capped at 10 epochs, size 2 (1.6) beats sizes 3 and 4 on the
slower machine. The threshold, 1.25, lies between the sizes that lost (0.9 and under) and won (1.6 and
over). The timing is rough (the fastest of two steps, without evaluations: three size-3 runs on the
reference book trained 0.72 to 1.03 times the tokens it estimated); the threshold is set on its estimates.

It applies when the run has a time budget and the user set none of the model's shape (--size,
--d-model, --n-layers, --n-heads, --d-ffn, --max-seq-len, --lr, on the command line or in --config);
not to a resumed model, and not under torchrun, where every process would time its own steps. Sizes
stop at 8 (6.9 M parameters): on a GPU or with a long budget a larger --size is the user's to choose.
The timing takes a few seconds before the run and does not count against --time.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from hellogpt.core.settings import Config, size_settings
from hellogpt.model.checkpoint import gpt_config
from hellogpt.model.gpt import GPT
from hellogpt.training.optim import make_optimizer
from hellogpt.training.schedule import plan_for
from hellogpt.training.step import optimizer_step

TOKENS_PER_PARAMETER = 1.25
SIZES = range(2, 9)  # the sizes considered, smallest first
SHAPE_SETTINGS = ("size", *size_settings(1))


def should_fit(given: dict | None, config: Config) -> bool:
    """Whether to pick the size: a time budget, no shape setting among those the user gave, and the
    config's shape that of its size. given=None (no user's settings: a program's own Config) and a
    Config of another shape are trained as they are."""
    if given is None:
        return False
    family = all(getattr(config, name) == value for name, value in size_settings(config.size).items())
    return config.time > 0 and family and not any(name in given for name in SHAPE_SETTINGS)


def sized(config: Config, size: int) -> Config:
    """config with the shape of `size` (every field of size_settings replaced)."""
    return replace(config, size=size, **size_settings(size))


def step_seconds(model: torch.nn.Module, config: Config, device: torch.device, steps: int = 2) -> float:
    """The fastest of `steps` training steps of `model` (fresh: it is trained on random tokens) with
    config's batch and optimizer, after one warm-up step (memory allocation, kernel choices)."""
    model.to(device)
    optimizer = make_optimizer(model, config)
    B, T, vocab_size = config.batch_size, config.max_seq_len, model.config.vocab_size

    def batch():
        idx = torch.randint(0, vocab_size, (B, T + 1), device=device)
        return idx[:, :-1], idx[:, 1:]

    def one_step() -> float:
        start = time.perf_counter()
        optimizer_step(model, model, optimizer, batch, config.grad_accum, config.grad_clip, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    one_step()
    return min(one_step() for _ in range(steps))


def planned_tokens(config: Config, seconds_per_step: float, train_tokens: int) -> int:
    """Tokens the run would train on: as many steps as fit in config.time, or fewer if the run's plan
    (its epochs or max_steps: schedule.plan_for) ends it first."""
    tokens_per_step = config.tokens_per_step()
    steps = config.time / seconds_per_step
    plan = plan_for(config, train_tokens, tokens_per_step)
    if plan.total_steps:
        steps = min(steps, plan.total_steps)
    return int(steps * tokens_per_step)


def fit_size(config: Config, train_tokens: int, vocab_size: int, device: torch.device, note) -> Config:
    """config with the largest size of SIZES whose run sees at least TOKENS_PER_PARAMETER tokens per
    parameter (the smallest size if none does); `note` receives a line saying what was measured."""
    started = time.perf_counter()
    chosen, why = None, ""
    for size in SIZES:
        candidate = sized(config, size)
        model = GPT(gpt_config(replace(candidate, dropout=0.0), vocab_size))  # counted, then timed
        params = model.num_params()
        tokens = planned_tokens(candidate, step_seconds(model, candidate, device), train_tokens)
        if chosen is not None and tokens < TOKENS_PER_PARAMETER * params:
            why = (f"; size {size} ({params:,} parameters) would see {tokens / params:.1f} tokens per parameter, "
                   f"under the {TOKENS_PER_PARAMETER:g} asked for")
            break
        chosen, chosen_tokens, chosen_params = candidate, tokens, params
    limits = f"{config.time:g} s on this machine" + (f", at most {config.epochs:g} epochs" if config.epochs else "")
    note(f"Size {chosen.size} for this run: {chosen_params:,} parameters, about {chosen_tokens:,} tokens in "
         f"{limits} ({chosen_tokens / chosen_params:.1f} per parameter){why}. "
         f"Timing the sizes took {time.perf_counter() - started:.1f} s; --size N decides instead.")
    return chosen
