"""Start-up time: from `python main.py` to the first prompt, with a model of the seed's size.

A home is made once in a temporary folder: the tokenizer (vocabulary 8000, trained on Pride and
Prejudice: ../shared/corpus/pg1342.txt, else the copy bundled with HelloGPT) and a checkpoint of the seed's model size (bench_models.py; fresh weights: loading does not care how
well a model writes). Then `python main.py --home HOME` is started --runs times; the clock runs
from starting the process until the prompt "> " appears on its output. Budget: 2.5 s. The CPU
seconds each run used (start to exit, all threads) are shown too: they depend less on what else
the machine is doing.

    python benchmarks/startup.py [--runs 7]

Prints a table and writes benchmarks/out/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_models import SEED_MODEL, reference_book

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "startup.json"
BUDGET = 2.5


def make_home(root: Path) -> None:
    from hellogpt.core.paths import Home
    from hellogpt.core.settings import Config
    from hellogpt.data.tokenizer import load_tokenizer, train_bpe
    from hellogpt.model.checkpoint import gpt_config, save_checkpoint
    from hellogpt.model.gpt import GPT

    home = Home(root)
    home.tokenizer_path.parent.mkdir(parents=True)
    text = reference_book().read_text(encoding="utf-8")
    config = Config(**SEED_MODEL)
    train_bpe([text], config.vocab_size, show_progress=False).save(str(home.tokenizer_path))
    tokenizer = load_tokenizer(home.tokenizer_path)
    model = GPT(gpt_config(config, tokenizer.vocab_size))
    save_checkpoint(home.model_dir(config.model_name), {
        "model": model.state_dict(), "model_config": model.config.to_dict(), "config": config.to_dict(),
        "tokenizer_fingerprint": tokenizer.fingerprint, "step": 0, "metrics": [],
    })
    print(f"home {root}: model '{config.model_name}', {model.num_params():,} parameters")


def time_to_prompt(home: Path) -> tuple[float, float]:
    """(seconds to the prompt, CPU seconds of the whole process, start to exit)."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    app = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--home", str(home)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while not seen.endswith(b"> "):
        chunk = os.read(app.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"the application ended before its prompt: {app.stderr.read().decode()}")
        seen += chunk
    seconds = time.perf_counter() - started
    app.communicate(b"")  # end of input: the application says goodbye and exits
    return seconds, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_home(Path(tmp))
        time_to_prompt(Path(tmp))  # warm-up: the first start also fills the OS file cache
        runs = [time_to_prompt(Path(tmp)) for _ in range(args.runs)]
    times, cpu = [r[0] for r in runs], [r[1] for r in runs]
    median = statistics.median(times)
    print(f"{'python main.py, ' + str(args.runs) + ' runs':<44}{'median':>8}{'min':>8}{'max':>8}")
    print(f"{'seconds to the first prompt':<44}{median:>8.2f}{min(times):>8.2f}{max(times):>8.2f}")
    print(f"{'CPU seconds, start to exit':<44}{statistics.median(cpu):>8.2f}{min(cpu):>8.2f}{max(cpu):>8.2f}")
    print(f"budget {BUDGET} s: {'within' if median <= BUDGET else 'OVER'}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"seconds": times, "cpu_seconds": cpu, "median": median, "budget": BUDGET}, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
