"""Fixtures shared by the tests (each file keeps its own private ones; helpers.py has shared functions).

The tests need nothing beside the project: their books are the two that come inside the package
(hellogpt.data.books.bundled_text: Pride and Prejudice, 1342, and The Wonderful Wizard of Oz, 55),
slices of them, and texts made up from them; a Gutenberg mirror is a local HTTP server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hellogpt.core.paths import Home
from hellogpt.data.books import add_bundled_books, read_book
from hellogpt.model.checkpoint import gpt_config
from hellogpt.model.gpt import GPT, GPTConfig, KVCache
from helpers import bundled


@pytest.fixture(scope="session")
def bundled_dir(tmp_path_factory) -> Path:
    """A folder holding the two bundled books as pg1342.txt and pg55.txt, as `hellogpt data bundled` writes
    them (Project Gutenberg's bytes: Oz with its header and footer markers). Read only: copy what you change."""
    folder = tmp_path_factory.mktemp("bundled")
    add_bundled_books(folder)
    return folder


@pytest.fixture
def make_gpt():
    """Build a tiny GPT in eval mode with weights redrawn large (std 0.2; LayerNorm weights
    around 1, biases non-zero) so that a wrong transpose, mask or formula shows in the logits."""

    def make(seed: int = 0, **overrides) -> GPT:
        fields = dict(vocab_size=300, max_seq_len=32, d_model=64, n_layers=2, n_heads=4, d_ffn=256, dropout=0.0)
        fields.update(overrides)
        torch.manual_seed(seed)
        model = GPT(GPTConfig(**fields))
        with torch.no_grad():
            for module in model.modules():
                for name, p in module.named_parameters(recurse=False):
                    is_gain = isinstance(module, torch.nn.LayerNorm) and name == "weight"
                    p.normal_(mean=1.0 if is_gain else 0.0, std=0.2)
        return model.eval()

    return make


@torch.no_grad()
def _greedy(model: GPT, prompt: list[int], n: int, use_cache: bool) -> tuple[list[int], torch.Tensor]:
    """n greedy tokens after `prompt` and the logits (n, V) each was chosen from. The context is
    cropped to the last max_seq_len tokens; with use_cache, a KV cache is fed one token at a time
    and, when full, reset and refilled with the last max_seq_len tokens."""
    T = model.config.max_seq_len
    tokens, chosen_from = list(prompt), []
    cache = KVCache(model.config, batch_size=1, device="cpu") if use_cache else None
    new = tokens
    for _ in range(n):
        if cache is None:
            logits, _ = model(torch.tensor([tokens[-T:]]))
        else:
            if cache.pos + len(new) > T:
                cache.reset()
                new = tokens[-T:]
            logits, _ = model(torch.tensor([new]), kv_cache=cache)
        chosen_from.append(logits[0, -1])
        tokens.append(int(logits[0, -1].argmax()))
        new = tokens[-1:]
    return tokens[len(prompt):], torch.stack(chosen_from)


@pytest.fixture
def greedy():
    """greedy(model, prompt_ids, n, use_cache) -> (new token ids, (n, V) logits they came from)."""
    return _greedy


@pytest.fixture(scope="session")
def small_tokenizer(bundled_dir, tmp_path_factory):
    """A byte-level BPE (vocabulary 512) trained on the training part of The Wonderful Wizard of Oz (210 KB)."""
    from hellogpt.data.tokenizer import train_tokenizer

    home = Home(tmp_path_factory.mktemp("small_tokenizer"))
    return train_tokenizer(home, bundled_dir / "pg55.txt", vocab_size=512, val_fraction=0.1)


@pytest.fixture(scope="session")
def run_hellogpt():
    """run_hellogpt(*args, env=None, input=None) -> CompletedProcess: `python -m hellogpt ARGS` in a subprocess,
    as a user runs it (text output captured; `env` entries are added to the current environment)."""

    def run(*args: str, env: dict | None = None, timeout: float = 300, input: str | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hellogpt", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})}, input=input)

    return run


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory):
    """A home ready for generation: data/pride.txt (40,000 characters of Pride and Prejudice), its
    tokenizer (vocabulary 400) and model 'tiny' serial 1 (2 layers, d_model 32, context 32, untrained
    weights; metrics record a validation bits per byte of 7.5). Copy it before changing it."""
    from hellogpt.core.settings import Config
    from hellogpt.data.tokenizer import load_tokenizer, train_bpe
    from hellogpt.model.checkpoint import save_checkpoint

    home = Home(tmp_path_factory.mktemp("tiny_home"))
    text = bundled(1342)[2_000:42_000]
    home.data_dir.mkdir(parents=True)
    (home.data_dir / "pride.txt").write_text(text, encoding="utf-8")
    home.tokenizer_path.parent.mkdir(parents=True)
    train_bpe([text], vocab_size=400).save(str(home.tokenizer_path))
    tokenizer = load_tokenizer(home.tokenizer_path)
    config = Config(model_name="tiny", max_seq_len=32, d_model=32, n_layers=2, n_heads=2, d_ffn=64, dropout=0.0)
    torch.manual_seed(0)
    model = GPT(gpt_config(config, tokenizer.vocab_size))
    save_checkpoint(home.model_dir("tiny"), {
        "model": model.state_dict(), "model_config": model.config.to_dict(), "config": config.to_dict(),
        "tokenizer_fingerprint": tokenizer.fingerprint, "step": 0, "tokens_seen": 0,
        "metrics": [{"split": "val", "step": 0, "loss": 4.2, "bits_per_byte": 7.5}],
    })
    return home


@pytest.fixture(scope="session")
def book(bundled_dir, tmp_path_factory):
    """The first 60,000 characters of The Wonderful Wizard of Oz (after its Gutenberg header), as a book of its own."""
    path = tmp_path_factory.mktemp("book") / "oz.txt"
    path.write_text(read_book(bundled_dir / "pg55.txt")[:60_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer_file(book, tmp_path_factory):
    """A 300-token tokenizer trained on `book`, for tiny training runs."""
    from hellogpt.data.tokenizer import train_tokenizer

    home = Home(tmp_path_factory.mktemp("tok"))
    train_tokenizer(home, book, vocab_size=300, val_fraction=0.1)
    return home.tokenizer_path
