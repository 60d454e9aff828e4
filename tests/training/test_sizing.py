"""Sizing the model for a time budget: which runs are sized, the tokens a run would see, the size chosen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from hellogpt.model.checkpoint import gpt_config
from hellogpt.training import sizing
from hellogpt.model.checkpoint import load_checkpoint
from hellogpt.core.settings import Config, size_settings
from hellogpt.model.gpt import GPT
from hellogpt.core.paths import Home
from hellogpt.training.sizing import fit_size, planned_tokens, should_fit, sized

VOCAB = 2048
CPU = torch.device("cpu")


def test_which_runs_are_sized():
    assert should_fit({}, Config())  # the defaults: two minutes, size 4
    assert should_fit({"time": 60.0, "batch_size": 16}, Config(time=60.0, batch_size=16))
    assert not should_fit({"size": 4}, Config(size=4))  # the user chose
    assert not should_fit({"d_model": 96}, Config(d_model=96))
    assert not should_fit({"max_steps": 100}, Config(max_steps=100))  # no time budget
    assert not should_fit({}, Config(d_model=32, n_layers=2, n_heads=2))  # a caller's own shape


def test_planned_tokens_follow_the_first_limit():
    config = Config(size=3, batch_size=10, time=60.0, epochs=10.0)
    per_step = 10 * config.max_seq_len
    assert planned_tokens(config, 0.5, train_tokens=10**9) == 120 * per_step  # the clock ends it
    assert planned_tokens(config, 0.5, train_tokens=5 * per_step) == 50 * per_step  # 10 epochs of 5 steps
    assert planned_tokens(replace(config, max_steps=30), 0.5, train_tokens=10**9) == 30 * per_step


def params(size: int) -> int:
    return GPT(gpt_config(sized(Config(), size), VOCAB)).num_params()


def machine(tokens_per_param: dict[int, float]):
    """A stand-in for timing a step: each size's step takes as long as makes its run see
    tokens_per_param[size] tokens per parameter in the budget."""

    def step_seconds(model, config, device):
        tokens_per_step = config.batch_size * config.max_seq_len
        return config.time * tokens_per_step / (tokens_per_param[config.size] * params(config.size))

    return step_seconds


@pytest.mark.parametrize("speeds, expected", [
    ({2: 9.0, 3: 2.7, 4: 0.9, 5: 0.3, 6: 0.1, 7: 0.1, 8: 0.1}, 3),  # the largest with 1.25 tokens per parameter or more
    ({2: 20.0, 3: 8.0, 4: 1.7, 5: 0.6, 6: 0.2, 7: 0.1, 8: 0.1}, 4),
    ({2: 9.0, 3: 2.7, 4: 1.1, 5: 0.4, 6: 0.1, 7: 0.1, 8: 0.1}, 3),  # 1.1 is not enough
    ({2: 0.5, 3: 0.2, 4: 0.1, 5: 0.1, 6: 0.1, 7: 0.1, 8: 0.1}, 2),  # none: the smallest
    ({size: 50.0 for size in sizing.SIZES}, 8),  # all: the largest considered
])
def test_fit_size_takes_the_largest_that_sees_enough(monkeypatch, speeds, expected):
    monkeypatch.setattr(sizing, "step_seconds", machine(speeds))
    notes = []
    chosen = fit_size(Config(), train_tokens=10**9, vocab_size=VOCAB, device=CPU, note=notes.append)
    assert chosen.size == expected
    assert {k: getattr(chosen, k) for k in size_settings(expected)} == size_settings(expected)
    assert len(notes) == 1 and notes[0].startswith(f"Size {expected} for this run: {params(expected):,} parameters")


def test_a_short_book_gets_a_smaller_model(monkeypatch):
    """The same machine, a book whose 10 epochs are fewer tokens than the clock allows."""
    monkeypatch.setattr(sizing, "step_seconds", machine({2: 9.0, 3: 2.7, 4: 1.7, 5: 1.3, 6: 0.5, 7: 0.1, 8: 0.1}))
    assert fit_size(Config(), 10**9, VOCAB, CPU, print).size == 5
    assert fit_size(Config(), params(3) // 7, VOCAB, CPU, print).size == 3  # 10 epochs: 1.4 tokens per parameter


def test_step_seconds_times_a_real_step():
    config = sized(Config(), 2)
    seconds = sizing.step_seconds(GPT(gpt_config(config, VOCAB)), config, CPU)
    assert 0 < seconds < 10


@pytest.mark.integration
def test_train_without_a_size_is_sized_for_the_machine(tmp_path, tokenizer_file, book):
    """`hellogpt train --time 3` with no shape flags: the size is chosen, said, and stored."""
    home = Home(tmp_path)
    home.tokenizer_dir.mkdir(parents=True)
    shutil.copy(tokenizer_file, home.tokenizer_path)
    r = subprocess.run([sys.executable, "-m", "hellogpt", "--home", str(home.root), "train", "--data", str(book),
                        "--time", "3", "--eval-every", "0"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith("Size "))
    size = int(line.split()[1])
    assert "per parameter" in line and "--size N decides instead" in line
    config = load_checkpoint(home.model_dir("hellogpt") / "serial_1.pt")["config"]
    assert config["size"] == size and config["d_model"] == size_settings(size)["d_model"]
    assert f"size={size} " in r.stdout  # the Settings line shows the size trained


def test_a_callers_own_config_is_trained_as_it_is(tmp_path, tokenizer_file, book, capsys, monkeypatch):
    """train() without `given` (a program's own Config, not a user's command line) picks no size."""
    from hellogpt.training.trainer import train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    home = Home(tmp_path)
    home.tokenizer_dir.mkdir(parents=True)
    shutil.copy(tokenizer_file, home.tokenizer_path)
    result = train(Config(size=2, time=1.0, eval_every=0), home, book)
    assert "for this run" not in capsys.readouterr().out
    assert load_checkpoint(result.checkpoint)["config"]["size"] == 2
