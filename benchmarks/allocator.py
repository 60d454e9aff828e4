"""What glibc's allocator setting (core.device.keep_freed_memory) does to a training step on the CPU.

    python benchmarks/allocator.py              # the two-minute model of a CPU without bfloat16 (size 3)
    python benchmarks/allocator.py --size 4     # another size

Each variant runs in its own process (mallopt cannot be undone), the two alternating: glibc's defaults,
and the setting training applies (core.device.setup_device -> keep_freed_memory). Both time the same
training steps (training.step.optimizer_step, with training's threads and optimizer) of a fresh model of
the size's shape (its context, the default batch) on random tokens, after warm-up steps, and count the
process's minor page faults over them. Environment variables that
tune glibc's malloc are left out of both. Prints a table and writes benchmarks/out/allocator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from hellogpt.core.device import malloc_variable
from hellogpt.core.settings import Config, size_settings

OUT = Path(__file__).resolve().parent / "out"

STEPS = """
import json, resource, sys, time
import torch
from hellogpt.core.device import cpu_threads, keep_freed_memory
from hellogpt.core.settings import Config, size_settings
from hellogpt.model.checkpoint import gpt_config
from hellogpt.model.gpt import GPT
from hellogpt.training.optim import make_optimizer
from hellogpt.training.step import optimizer_step

keep, size, batch_size, context, steps = sys.argv[1] == "keep", *map(int, sys.argv[2:])
took = keep_freed_memory() if keep else False
torch.set_num_threads(cpu_threads())  # the rest of what setup_device does on a CPU, in both variants
config = Config(size=size, **{**size_settings(size), "max_seq_len": context}, batch_size=batch_size, time=120)
torch.manual_seed(0)
model = GPT(gpt_config(config, 2048))
optimizer = make_optimizer(model, config)
batch = lambda: (torch.randint(0, 2048, (batch_size, context)), torch.randint(0, 2048, (batch_size, context)))
step = lambda: optimizer_step(model, model, optimizer, batch, config.grad_accum, config.grad_clip, torch.device("cpu"))
for _ in range(10):
    step()
faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for _ in range(steps):
    step()
seconds = time.perf_counter() - start
print("RESULT", json.dumps({"setting_took": took, "ms_per_step": 1000 * seconds / steps,
                  "page_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="(default: core/settings.py's)")
    parser.add_argument("--context", type=int, default=None, help="(default: the size's)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2, help="processes per variant, alternating")
    parser.add_argument("--out", type=Path, default=OUT / "allocator.json")
    args = parser.parse_args()
    args.batch_size = args.batch_size or Config.batch_size
    args.context = args.context or size_settings(args.size)["max_seq_len"]
    env = {k: v for k, v in os.environ.items() if not malloc_variable(k) and k != "LD_PRELOAD"}  # glibc as it comes

    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {"glibc defaults": [], "keep_freed_memory": []}
    variants = [("glibc defaults", "default"), ("keep_freed_memory", "keep")]
    for i in range(args.runs):
        for name, flag in variants[::1 if i % 2 == 0 else -1]:  # alternate which goes first: the speed drifts
            run = subprocess.run([sys.executable, "-c", STEPS, flag, str(args.size), str(args.batch_size),
                                  str(args.context), str(args.steps)], capture_output=True, text=True, env=env)
            if run.returncode != 0:
                raise SystemExit(f"the {name} process failed (exit code {run.returncode}):\n{run.stderr}")
            result = json.loads(next(line for line in run.stdout.splitlines()[::-1] if line.startswith("RESULT "))[7:])
            if flag == "keep" and not result["setting_took"]:
                raise SystemExit("keep_freed_memory did not take here (not glibc on Linux?): nothing to compare.")
            results[name].append(result)

    print(f"size {args.size}, batch {args.batch_size} x context {args.context}, vocabulary 2048, "
          f"{args.steps} steps per process, {args.runs} processes each; load average {load_before[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs")
    header = f"{'allocator':20} {'ms/step (each run)':>22} {'page faults/step':>17}"
    print(header)
    print("-" * len(header))
    for name, runs in results.items():
        ms = " / ".join(f"{r['ms_per_step']:.1f}" for r in runs)
        faults = sum(r["page_faults_per_step"] for r in runs) / len(runs)
        print(f"{name:20} {ms:>22} {faults:17,.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "size": args.size,
        "batch_size": args.batch_size, "context": args.context, "steps": args.steps,
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "results": results,
    }, indent=2))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
