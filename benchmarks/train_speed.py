"""Training speed: ms per step, tokens/s and model FLOPs utilisation (MFU) of HelloGPT's training step.

    python benchmarks/train_speed.py                 # both models, HelloGPT's step
    python benchmarks/train_speed.py --ablation      # also the textbook step, to see what each change brings

MFU is the model's training FLOPs per second (GPT.flops_per_token x tokens/s) over the machine's
measured matmul peak (the best of several 2048 x 2048 matmuls on all threads) in the precision the
step multiplies in: HelloGPT's step runs under core.device.autocast, bfloat16 on a CPU with native
bfloat16 (whose bfloat16 peak is then the yardstick), the textbook step in float32. The two
models are those of issue 4, dropout 0, built as training builds them (settings.Config's architecture
defaults, model.checkpoint.gpt_config: today's GELU, biases and tied head):

    (a) 4 layers, 4 heads, d_model 256, d_ffn 1024, context 128, vocabulary 8000, batch 32
    (b) 4 layers, 4 heads, d_model 128, d_ffn 512, context 64, vocabulary 65, batch 12

and nanoGPT's own implementation of them trains at about 1290 ms and 55 ms per step on this 2-core
machine class (issue 4's reference, taken on a quiet machine). Batches are random windows of a random
token array, cut as in training (data.tokens.EpochSampler). HelloGPT's step is training.step.optimizer_step
with AdamW (nanoGPT's optimizer, so that the update is the same and the times compare the code) and
clipping at 1.0 as nanoGPT; the process is set up as training sets it up (core.device.setup_device: the
threads, and glibc's allocator told to keep freed memory, which the textbook rows get too). Prints a table
and writes benchmarks/out/train_speed.json. The load average is recorded with the numbers: on a busy
machine wall times are inflated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench_models import SEED_MODEL

from hellogpt.core.device import keep_freed_memory, native_bfloat16, setup_device
from hellogpt.core.settings import Config
from hellogpt.data.tokens import EpochSampler, windows
from hellogpt.model.checkpoint import gpt_config
from hellogpt.model.gpt import GPT
from hellogpt.training.optim import make_optimizer
from hellogpt.training.step import optimizer_step

# name: (settings, vocabulary, batch, nanoGPT's ms per step). Model (b)'s 65 characters are below the smallest
# vocabulary a Config accepts (a byte-level tokenizer's 257), so it goes to gpt_config directly.
MODELS = {
    "a": (Config(**{**SEED_MODEL, "dropout": 0.0, "optimizer": "adamw"}), SEED_MODEL["vocab_size"], 32, 1290.0),
    "b": (Config(max_seq_len=64, d_model=128, n_layers=4, n_heads=4, d_ffn=512, dropout=0.0, optimizer="adamw"),
          65, 12, 55.0),
}
OUT = Path(__file__).resolve().parent / "out"


def matmul_peak(dtype=torch.float32, n: int = 2048, repeats: int = 20) -> float:
    """FLOP/s of the fastest of `repeats` n x n matmuls in `dtype`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(_timed(lambda: a @ b)[0] for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def textbook_step(model, optimizer, next_batch):
    """The step as most tutorials write it: full logits into F.cross_entropy, the default AdamW."""
    x, y = next_batch()
    logits, _ = model(x)
    F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(key: str, variant: str, steps: int, compile_model: bool) -> dict:
    config, vocab_size, batch_size, reference_ms = MODELS[key]
    cfg = gpt_config(config, vocab_size)
    torch.manual_seed(0)
    model = GPT(cfg)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, 1_000_000, dtype=np.uint16)
    sampler = EpochSampler(tokens, cfg.max_seq_len, seed=0)

    def next_batch():
        return windows(tokens, sampler.next(batch_size), cfg.max_seq_len)

    if variant == "hellogpt":
        # AdamW, as nanoGPT's reference: the same update, so the step times compare the code alone.
        optimizer = make_optimizer(model, config)
        runner = torch.compile(model) if compile_model else model

        def step():
            optimizer_step(runner, model, optimizer, next_batch, 1, 1.0, torch.device("cpu"))
    else:
        fused = variant == "textbook+fused_adamw"
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused or None)

        def step():
            textbook_step(model, optimizer, next_batch)

    first = _timed(step)[0]  # with --compile, this is when compiling happens
    for _ in range(2):
        step()
    timings = [_timed(step) for _ in range(steps)]
    ms = statistics.median(t[0] for t in timings) * 1000
    cpu_ms = statistics.median(t[1] for t in timings) * 1000
    tokens_per_step = batch_size * cfg.max_seq_len
    return {
        "model": key, "variant": variant + ("+compile" if compile_model else ""), "steps": steps,
        "ms_per_step": ms, "best_ms_per_step": min(t[0] for t in timings) * 1000, "cpu_ms_per_step": cpu_ms,
        "tokens_per_s": tokens_per_step / ms * 1000, "first_step_s": first,
        "flops_per_token": model.flops_per_token(), "reference_ms_per_step": reference_ms,
        "speedup_vs_reference": reference_ms / ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="a,b", help="which of a, b (default: both)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per model (default: 10 for a, 40 for b)")
    parser.add_argument("--ablation", action="store_true", help="also time the textbook step, with and without "
                        "fused AdamW")
    parser.add_argument("--compile", action="store_true", help="also time HelloGPT's step under torch.compile")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    parser.add_argument("--out", type=Path, default=OUT / "train_speed.json")
    args = parser.parse_args()

    setup_device(torch.device("cpu"))  # as training: one thread per core, glibc keeping freed memory
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    peak = matmul_peak()
    bf16 = native_bfloat16("cpu")  # then HelloGPT's step multiplies in bfloat16 (core.device.autocast)
    hellogpt_peak = matmul_peak(torch.bfloat16) if bf16 else peak
    variants = (["textbook", "textbook+fused_adamw"] if args.ablation else []) + ["hellogpt"]
    rows = []
    for key in args.models.split(","):
        steps = args.steps or (10 if key == "a" else 40)
        for variant in variants:
            rows.append(measure(key, variant, steps, compile_model=False))
        if args.compile:
            rows.append(measure(key, "hellogpt", steps, compile_model=True))
    for row in rows:
        row["precision"] = "bfloat16" if bf16 and row["variant"].startswith("hellogpt") else "float32"
        row["mfu"] = row["flops_per_token"] * row["tokens_per_s"] / (
            hellogpt_peak if row["precision"] == "bfloat16" else peak)

    print(f"matmul peak (2048 x 2048) on {torch.get_num_threads()} threads: float32 {peak / 1e9:.1f} GFLOP/s"
          + (f", bfloat16 {hellogpt_peak / 1e9:.1f} GFLOP/s (HelloGPT's step multiplies in bfloat16 here)"
             if bf16 else "") + f"; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"GELU {MODELS['a'][0].gelu}; glibc keeping freed memory: {'yes' if keep_freed_memory() else 'no'}")
    header = f"{'model':5} {'variant':28} {'precision':9} {'ms/step':>9} {'best':>8} {'cpu ms':>8} {'tokens/s':>9} {'MFU':>6} " \
             f"{'vs nanoGPT':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:5} {r['variant']:28} {r['precision']:9} {r['ms_per_step']:9.1f} {r['best_ms_per_step']:8.1f} "
              f"{r['cpu_ms_per_step']:8.1f} {r['tokens_per_s']:9,.0f} {r['mfu']:6.1%} "
              f"{r['speedup_vs_reference']:9.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "keep_freed_memory": keep_freed_memory(), "gelu": MODELS["a"][0].gelu,
        "matmul_peak_flops": peak,
        "bfloat16_matmul_peak_flops": hellogpt_peak if bf16 else None,
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "rows": rows,
    }, indent=2))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
