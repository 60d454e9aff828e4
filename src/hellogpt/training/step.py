"""One optimizer step, the batches it eats, and the random state a run must save to resume exactly.

One optimizer step, as in nanoGPT:

    for each of grad_accum micro-batches:    x, y = B windows of T tokens (targets: x shifted by one)
        loss = model(x, y) / grad_accum       mean cross-entropy of the next-token predictions
        loss.backward()                       gradients add up over the micro-batches
    clip the gradients' global norm to grad_clip
    optimizer step (Muon for the blocks' weight matrices, AdamW for the rest: optim.py), gradients cleared
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

from hellogpt.core import distributed
from hellogpt.core.device import autocast
from hellogpt.data.tokens import EpochSampler, windows
from hellogpt.training.loss import linear_cross_entropy


class Batches:
    """This process's share of each training batch.

    One sampler (tokens.EpochSampler), seeded alike on every rank, picks batch_size x world_size
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
                _, loss = runner(x, y, loss_fn=linear_cross_entropy)  # the chunked head and loss (loss.py)
            (loss / grad_accum).backward()  # gradients add up over the micro-batches
        loss_sum += loss.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum.item() / grad_accum


def first_compiled_step(train_step, runner, model, batches: Batches, note):
    """The first step with torch.compile, which is when compiling happens; if it fails, warn and train
    without it, the step redone from the same random state."""
    rng, batch_rng = torch.get_rng_state(), batches.sampler.state_dict()
    try:
        return train_step(runner), runner
    except Exception as e:  # compilers fail in many ways (no C++ compiler, unsupported op, ...)
        reason = str(e).splitlines()[0] if str(e) else ""
        note(f"warning: torch.compile failed ({type(e).__name__}: {reason}); training without it.")
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
