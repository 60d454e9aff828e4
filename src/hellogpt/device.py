"""Device and precision, decided in one place.

CPU: float32, one thread per core. CUDA: bfloat16 autocast and TF32 matmuls.
Apple MPS where present. Everything else asks `pick_device()` and `autocast()`.
"""

from __future__ import annotations

import contextlib
import os

import torch


def pick_device(requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        if "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_device(device: torch.device) -> None:
    """Global knobs for the chosen device (call once at start-up)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.set_device(device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain float32 elsewhere (this CPU has no fast bf16)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
