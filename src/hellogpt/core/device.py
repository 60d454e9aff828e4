"""Device and precision, decided in one place.

CPU: one thread per core; bfloat16 autocast where the CPU multiplies bfloat16 natively, else float32;
glibc's allocator told to keep freed memory for reuse (keep_freed_memory).
CUDA: bfloat16 autocast and TF32 matmuls.
Apple MPS where present. Everything else asks `pick_device()`, `autocast()` and `native_bfloat16()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from functools import cache

import torch

from hellogpt.core.errors import UserError


def pick_device(requested: str | None = None) -> torch.device:
    """The device asked for ("auto": CUDA, else Apple's MPS, else the CPU), refused with a message when this
    machine has no such device."""
    if requested and requested != "auto":
        return _available(requested)
    if torch.cuda.is_available():
        if "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _available(requested: str) -> torch.device:
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        device = None
    ok = device is not None and (
        device.type == "cpu"
        or (device.type == "cuda" and torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count())
        or (device.type == "mps" and getattr(torch.backends, "mps", None) is not None
            and torch.backends.mps.is_available()))
    if not ok:
        raise UserError(f"Device {requested!r} is not one this machine has: {', '.join(available_devices())} "
                        "(or auto, the default, which picks the fastest). Fix --device or the config file.")
    return device


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def setup_device(device: torch.device, processes_on_machine: int = 1) -> None:
    """Global knobs for the chosen device (call once at start-up); on a CPU, also the number of threads."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.set_device(device)
    elif device.type == "cpu":
        keep_freed_memory()
        torch.set_num_threads(cpu_threads(processes_on_machine))


def cpu_threads(processes_on_machine: int = 1) -> int:
    """One thread per core, the cores shared among the processes on this machine; OMP_NUM_THREADS,
    when set, decides instead."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // processes_on_machine)


def malloc_variable(name: str) -> bool:
    """Whether an environment variable of that name tunes glibc's malloc (mallopt(3), tunables(7))."""
    return name == "GLIBC_TUNABLES" or name.startswith("MALLOC_")


# glibc's mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a training step frees, for the next step to reuse.

    By default glibc maps each block over a threshold (128 KB at first) fresh from the kernel and hands it
    back when freed, and returns the free top of its heap too; every step allocates and frees the same
    activations and gradients, so every step page-faults them in again, each page zeroed by the kernel.
    With blocks up to 32 MB (the ceiling of glibc's own adaptive threshold on 64-bit systems) served from
    the heap and its top kept (up to 1 GB), the two-minute model's step on a 2-core CPU had 9 or 10 page
    faults instead of 2,668 to 2,729 and was 6 and 8% faster on average in two runs of
    benchmarks/allocator.py, and its two minutes held 4 to 13% more steps in three pairs of runs
    (benchmarks/RESULTS.md); PyTorch's CPU tuning guide gets the same from jemalloc or tcmalloc. The cost:
    the process keeps its peak memory until it ends. Other C libraries (macOS, Windows, musl) are left as
    they are, and so is glibc when the user tunes it (MALLOC_* or GLIBC_TUNABLES in the environment).
    Returns whether the setting took."""
    user_tuned = any(malloc_variable(name) for name in os.environ)
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_tuned:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


@cache
def native_bfloat16(device_type: str) -> bool:
    """Whether the device multiplies bfloat16 natively: CUDA (assumed, as torch.optim.Muon does), or a CPU
    with AVX512-BF16 or AMX. Elsewhere bfloat16 products are emulated, many times slower than float32."""
    if device_type == "cuda":
        return True
    if device_type == "cpu":
        capabilities = getattr(torch.cpu, "get_capabilities", dict)()  # PyTorch 2.11 and later; else no
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def autocast(device: torch.device):
    """bfloat16 autocast where the device multiplies bfloat16 natively (CUDA; a CPU with AVX512-BF16 or
    AMX), plain float32 elsewhere. On this project's 2-core AVX512-BF16 machine the two-minute model's
    matrix products take half the time in bfloat16 and its training step 61 against 75 ms, for the same
    quality (benchmarks/RESULTS.md); model.causal_attention keeps the CPU's attention in float32."""
    if native_bfloat16(device.type):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
