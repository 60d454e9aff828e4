"""Generation speed: HelloGPT's generator against Hugging Face transformers' `generate`, same weights.

Batch 1, the seed's default model size (4 layers, 4 heads, d_model 256, d_ffn 1024, context 128,
vocabulary 8000), 120 new tokens after the prompt "Elizabeth", the same sampling settings on both
sides (temperature 0.8, top-k 50, top-p 0.95; greedy as a second row), end-of-text ignored so every
run makes exactly 120 tokens. The Hugging Face model is this model exported with hellogpt.model.hf.
The 8000-token tokenizer is trained on Pride and Prejudice: ../shared/corpus/pg1342.txt, or where that
folder is absent the copy bundled with HelloGPT (the same text).
Runs alternate between the contenders, and each figure is the median of --runs runs: tokens per
second of wall-clock time (what a user sees), and tokens per CPU-second of this process (less
sensitive to other programs competing for the cores; for several threads it counts them all).

HelloGPT's time covers everything a user waits for: encoding the prompt, prefill, sampling, and
streaming the text out through the UTF-8 decoder. Hugging Face's covers `generate` on token ids.
Both run with torch's default thread count and with one thread (the generator's default at batch 1);
the generator's default is compared with the faster Hugging Face run. (The rows keep the name
"hellogpt engine", the generator's name when the recorded figures were taken.)

    python benchmarks/generate_speed.py [--runs 7] [--home DIR --model-name NAME]

A trained model whose context is shorter than the prompt and 120 tokens (the defaults' 48 or 64) makes
as many as its context holds: transformers' GPT-2 cannot go past its last position, where HelloGPT's
generator refills its cache (generation/generator.py).

Prints a table and writes benchmarks/out/generate_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_models import SEED_MODEL, reference_book

from hellogpt.core.settings import Config
from hellogpt.data.tokenizer import Tokenizer, load_tokenizer, train_bpe
from hellogpt.generation.generator import Generator, Settings
from hellogpt.model.checkpoint import gpt_config
from hellogpt.model.gpt import GPT

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "generate_speed.json"
PROMPT = "Elizabeth"
NEW_TOKENS = 120
ENGINE = "hellogpt engine, 1 thread (default)"
SAMPLING = dict(temperature=0.8, top_k=50, top_p=0.95)
GREEDY = dict(temperature=0.0)


def model_and_tokenizer(args) -> tuple[GPT, Tokenizer, str]:
    """A trained checkpoint when --model-name is given, else the seed's size with fresh weights."""
    if args.model_name:
        from hellogpt.core.paths import Home
        from hellogpt.model.checkpoint import load_for_inference

        model, tokenizer, _, where = load_for_inference(Home.resolve(args.home), args.model_name)
        return model, tokenizer, f"{where.path}"
    config = Config(**SEED_MODEL)
    with tempfile.TemporaryDirectory() as tmp:  # a real 8000-token BPE, so streaming does real work
        text = reference_book().read_text(encoding="utf-8")
        path = Path(tmp) / "tokenizer.json"
        train_bpe([text], config.vocab_size, show_progress=False).save(str(path))
        tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    model = GPT(gpt_config(config, tokenizer.vocab_size)).eval()
    return model, tokenizer, "fresh weights, the seed's size"


def hf_model(model: GPT, tokenizer: Tokenizer):
    """The same weights as a transformers GPT2LMHeadModel, through HelloGPT's own export."""
    from transformers import GPT2LMHeadModel

    from hellogpt.model.hf import export_hf

    with tempfile.TemporaryDirectory() as tmp:
        export_hf(model, tokenizer, Path(tmp) / "gpt2")
        return GPT2LMHeadModel.from_pretrained(Path(tmp) / "gpt2").eval()


class Clock:
    """Wall-clock and CPU seconds of a block (CPU time: every thread of this process)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_generator(generator: Generator, sampling: dict, new_tokens: int) -> Clock:
    settings = Settings(max_new_tokens=new_tokens, seed=0, stop_at_eot=False, **sampling)
    with Clock() as clock:
        for _ in generator.stream(PROMPT, settings):
            pass
    assert generator.last.new_tokens == new_tokens
    return clock


def time_hf(model, prompt_ids: list[int], sampling: dict, threads: int, new_tokens: int) -> Clock:
    kwargs = dict(do_sample=True, **sampling) if sampling["temperature"] else dict(do_sample=False)
    idx = torch.tensor([prompt_ids])
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode(), Clock() as clock:
            out = model.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0, **kwargs)
    finally:
        torch.set_num_threads(previous)
    assert out.size(1) - idx.size(1) == new_tokens
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--home", help="home of a trained model (with --model-name)")
    parser.add_argument("--model-name", help="benchmark this trained model instead of fresh weights")
    args = parser.parse_args()

    model, tokenizer, source = model_and_tokenizer(args)
    hf = hf_model(model, tokenizer)
    prompt_ids = tokenizer.encode_prompt(PROMPT)  # as the generator encodes it
    new_tokens = min(NEW_TOKENS, model.config.max_seq_len - len(prompt_ids))  # within the context (see above)
    default_threads = torch.get_num_threads()
    generator = Generator(model, tokenizer)
    generator_all_threads = Generator(model, tokenizer, threads=default_threads)
    contenders = {
        ENGINE: lambda s: time_generator(generator, s, new_tokens),
        f"hellogpt engine, {default_threads} threads": lambda s: time_generator(generator_all_threads, s, new_tokens),
        f"transformers generate, {default_threads} threads": lambda s: time_hf(hf, prompt_ids, s, default_threads,
                                                                               new_tokens),
        "transformers generate, 1 thread": lambda s: time_hf(hf, prompt_ids, s, 1, new_tokens),
    }
    results = {}  # mode -> contender -> {"wall": tok/s, "cpu": tok per CPU-second}
    for mode, sampling in (("sampling", SAMPLING), ("greedy", GREEDY)):
        for run in contenders.values():  # warm-up: first calls allocate and load kernels
            run(sampling)
        clocks = {name: [] for name in contenders}
        for _ in range(args.runs):
            for name, run in contenders.items():
                clocks[name].append(run(sampling))
        results[mode] = {name: {"wall": statistics.median(new_tokens / c.wall for c in cs),
                                "cpu": statistics.median(new_tokens / c.cpu for c in cs)}
                         for name, cs in clocks.items()}

    print(f"Generation, batch 1, {new_tokens} new tokens, median of {args.runs} runs ({source}; "
          f"{model.num_params():,} parameters; torch {torch.__version__})")
    print(f"{'tokens per second / per CPU-second':<40}{'sampling':>10}{'(CPU)':>8}{'greedy':>10}{'(CPU)':>8}")
    for name in contenders:
        row = [results[mode][name][clock] for mode in ("sampling", "greedy") for clock in ("wall", "cpu")]
        print(f"{name:<40}" + "".join(f"{v:>10.0f}{w:>8.0f}" for v, w in zip(row[::2], row[1::2])))
    speedup = {mode: {clock: r[ENGINE][clock] / max(v[clock] for k, v in r.items() if k.startswith("transformers"))
                      for clock in ("wall", "cpu")} for mode, r in results.items()}
    print(f"{'speed-up over the faster transformers':<40}" + "".join(
        f"{speedup[mode]['wall']:>9.1f}x{speedup[mode]['cpu']:>7.1f}x" for mode in ("sampling", "greedy")))

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"new_tokens": new_tokens, "runs": args.runs, "model": source,
                               "sampling": SAMPLING, "tokens_per_second": results, "speedup": speedup,
                               "torch": torch.__version__, "default_threads": default_threads}, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
