"""Training: exact resume, Ctrl-C, the schedule, settings on resume, evaluation, the plot, torch.compile's fallback."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal

import pytest
import torch

from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.core.settings import Config
from hellogpt.data.tokenizer import load_tokenizer, train_tokenizer
from hellogpt.model.checkpoint import load_checkpoint, serials
from hellogpt.training.evaluate import evaluate
from hellogpt.training.metrics import METRICS_FILE, PLOT_FILE
from hellogpt.training.schedule import Plan, lr_factor, plan_for
from hellogpt.training.trainer import Reporter, train

# A model small enough for a test to train it for 40 steps in about a second.
TINY = dict(vocab_size=300, max_seq_len=32, d_model=32, n_layers=2, n_heads=2, d_ffn=64, batch_size=8,
            warmup_steps=5, eval_every=10, dropout=0.1)
TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models train fastest on one thread (and the test machine is shared)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def make_home(tmp_path, tokenizer_file):
    """make_home(name) -> a Home holding the shared tiny tokenizer."""

    def make(name: str = "home") -> Home:
        home = Home(tmp_path / name)
        home.tokenizer_dir.mkdir(parents=True)
        shutil.copy(tokenizer_file, home.tokenizer_path)
        return home

    return make


def tiny_config(**overrides) -> Config:
    return Config(**{**TINY, **overrides})


def read_metrics(home: Home, name: str = "hellogpt", split: str = "train") -> list[dict]:
    lines = (home.model_dir(name) / METRICS_FILE).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


class CtrlCAt(Reporter):
    """A reporter that presses Ctrl-C (a real SIGINT) once a given step is reported, that is,
    while the next step runs; it keeps the notes."""

    def __init__(self, step: int, times: int = 1):
        self.step, self.times, self.notes = step, times, []

    def update(self, s):
        if s.step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)

    def note(self, message):
        self.notes.append(message)


@pytest.mark.smoke
def test_stop_and_resume_equals_uninterrupted(make_home, book):
    """20 steps, Ctrl-C, resume for the other 20: the same losses as 40 uninterrupted steps (dropout on,
    so the random states are restored too), the same validation losses and the same final weights."""
    straight, stopped = make_home("straight"), make_home("stopped")
    config = tiny_config(max_steps=40)
    whole = train(config, straight, book)
    assert (whole.steps, whole.interrupted) == (40, False)

    first = train(config, stopped, book, reporter=CtrlCAt(step=19))  # Ctrl-C while step 20 runs
    assert (first.steps, first.interrupted) == (20, True)
    assert first.checkpoint.name == "serial_1.pt"
    # A different model size is ignored on resume: the checkpoint's own configuration rebuilds the model.
    reporter = CtrlCAt(step=-1)
    second = train(Config(d_model=64), stopped, book, resume=True, given={"d_model": 64}, reporter=reporter)
    assert (second.steps, second.session_steps, second.interrupted) == (40, 20, False)
    assert any("ignoring d_model=64" in n for n in reporter.notes)

    losses = [(r["step"], r["loss"]) for r in read_metrics(straight)]
    resumed = [(r["step"], r["loss"]) for r in read_metrics(stopped)]
    assert [s for s, _ in resumed] == list(range(1, 41))
    assert max(abs(a - b) for (_, a), (_, b) in zip(losses, resumed)) <= 1e-6
    val = {r["step"]: r["loss"] for r in read_metrics(straight, split="val")}
    val_resumed = {r["step"]: r["loss"] for r in read_metrics(stopped, split="val")}
    assert list(val) == [10, 20, 30, 40]
    assert list(val_resumed) == [10, 30, 40]  # Ctrl-C skips the evaluation due at the step it stops
    assert max(abs(val[s] - loss) for s, loss in val_resumed.items()) <= 1e-6

    a = load_checkpoint(straight.model_dir("hellogpt") / "serial_1.pt")
    b = load_checkpoint(stopped.model_dir("hellogpt") / "serial_2.pt")
    assert b["model_config"]["d_model"] == 32
    for name, tensor in a["model"].items():
        assert (tensor - b["model"][name]).abs().max() <= 1e-6, name


@pytest.mark.smoke
def test_checkpoint_contents(make_home, book):
    home = make_home()
    result = train(tiny_config(max_steps=12, save_every=5), home, book)
    model_dir = home.model_dir("hellogpt")
    assert serials(model_dir) == [1, 2, 3]  # steps 5, 10, and the end
    assert result.checkpoint == model_dir / "serial_3.pt"
    ckpt = load_checkpoint(result.checkpoint)
    assert {"model", "model_config", "config", "optimizer", "scheduler", "step", "epoch", "tokens_seen", "elapsed",
            "tokenizer_fingerprint", "data_fingerprint", "rng", "metrics"} <= set(ckpt)
    assert ckpt["step"] == 12 and ckpt["tokens_seen"] == 12 * 8 * 32
    assert ckpt["config"]["max_steps"] == 12 and ckpt["scheduler"]["plan"] == {"total_steps": 12, "time": 0.0}
    assert ckpt["tokenizer_fingerprint"] == load_tokenizer(home.tokenizer_path).fingerprint
    assert {"torch", "cuda", "batches"} <= set(ckpt["rng"])
    assert [r["step"] for r in ckpt["metrics"] if r["split"] == "train"] == list(range(1, 13))
    # metrics.jsonl is the checkpoint's history, then the record of that checkpoint's save; every record names
    # the run (resumed runs of a model share its id), and each save says which serial holds which step.
    records = [json.loads(line) for line in (model_dir / METRICS_FILE).read_text().splitlines()]
    assert ckpt["metrics"] == records[:-1]
    assert records[-1] == {"split": "checkpoint", "step": 12, "serial": 3, "run": ckpt["run_id"]}
    assert [(r["step"], r["serial"]) for r in records if r["split"] == "checkpoint"] == [(5, 1), (10, 2), (12, 3)]
    assert {r["run"] for r in records} == {ckpt["run_id"]}
    assert (model_dir / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.val_loss == ckpt["metrics"][-1]["loss"] and ckpt["metrics"][-1]["split"] == "val"


@pytest.mark.smoke
def test_resuming_a_finished_run_extends_it(make_home, book):
    home = make_home()
    train(tiny_config(max_steps=6, eval_every=0), home, book)
    reporter = CtrlCAt(step=-1)
    result = train(tiny_config(), home, book, resume=True, reporter=reporter)
    assert (result.steps, result.checkpoint.name) == (12, "serial_2.pt")
    assert any("another 6 steps" in n for n in reporter.notes)
    # A new length given on resume is the run's new total.
    assert train(tiny_config(), home, book, resume=True, given={"max_steps": 15}).steps == 15


def test_second_ctrl_c_aborts_at_once(make_home, book):
    home = make_home()
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(max_steps=40), home, book, reporter=CtrlCAt(step=2, times=2))
    assert serials(home.model_dir("hellogpt")) == []
    assert [p.name for p in home.model_dir("hellogpt").iterdir()] == [METRICS_FILE]


def test_tokenizer_mismatch_is_refused(make_home, book):
    home = make_home()
    train(tiny_config(max_steps=2), home, book)
    train_tokenizer(home, book, vocab_size=280, val_fraction=0.1)
    with pytest.raises(UserError, match="different tokenizer") as e:
        train(tiny_config(), home, book, resume=True)
    assert "serial_1.pt" in str(e.value)


def test_compile_failure_falls_back_to_the_same_training(make_home, book, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: broken)
    compiled, eager, reporter = make_home("compiled"), make_home("eager"), CtrlCAt(step=-1)
    train(tiny_config(max_steps=5, compile=True), compiled, book, reporter=reporter)
    train(tiny_config(max_steps=5), eager, book)
    assert any("torch.compile failed (RuntimeError: no compiler here)" in n for n in reporter.notes)
    assert [r["loss"] for r in read_metrics(compiled)] == [r["loss"] for r in read_metrics(eager)]


def test_schedule():
    config = Config(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(config, 0, 0.0) == pytest.approx(0.1)  # warm-up: 1/10 of the peak at the first step
    assert lr_factor(config, 9, 0.0) == pytest.approx(1.0)
    assert lr_factor(config, 50, 0.5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(config, 25, 0.25) == pytest.approx(0.1 + 0.9 * 0.75)  # a straight line
    assert lr_factor(config, 99, 1.0) == pytest.approx(0.1)  # the decay ends at peak x min_lr_ratio
    steps = [lr_factor(config, s, s / 100) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))
    # The first limit reached decides; a time budget follows the elapsed time.
    assert Plan(total_steps=100).progress(25, 999.0) == 0.25
    assert Plan(time=60.0).progress(10_000, 15.0) == 0.25
    assert Plan(total_steps=100, time=60.0).progress(50, 45.0) == 0.75
    # Epochs count as steps over the training tokens; with steps too, the fewer decide.
    assert plan_for(Config(epochs=2.0, time=60.0), 1000, 100) == Plan(total_steps=20, time=60.0)
    assert plan_for(Config(epochs=2.0, max_steps=15), 1000, 100) == Plan(total_steps=15)


def test_time_budget_ends_the_run(make_home, book):
    home = make_home()
    result = train(tiny_config(time=1.5, eval_every=0), home, book)
    records = read_metrics(home)
    assert not result.interrupted and result.steps == len(records) > 1
    assert records[-2]["elapsed"] < 1.5 <= load_checkpoint(result.checkpoint)["elapsed"]
    # The schedule followed the clock: the learning rate fell as the time ran out (warm-up is 5 steps).
    lrs = [r["lr"] for r in records[5:]]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] <= tiny_config().lr * lr_factor(tiny_config(), 10**6, progress=0.75)


@pytest.mark.parametrize("bad, match", [({"batch_size": 0}, "batch_size"), ({"epochs": -1.0}, "epochs"),
                                        ({"dropout": 1.0}, "dropout")])
def test_bad_settings_are_refused(bad, match):
    """Before any training: a Config with a bad setting cannot be made."""
    with pytest.raises(UserError, match=match):
        tiny_config(**bad)


def test_evaluate_matches_its_definition(make_home, book):
    """Loss and bits per byte, recomputed window by window from the definition in the issue."""
    from hellogpt.data.tokens import prepare_tokens
    from hellogpt.core.device import autocast

    home = make_home()
    result = train(tiny_config(max_steps=3), home, book)
    model_dir = home.model_dir("hellogpt")
    from hellogpt.model.checkpoint import build_model

    model = build_model(load_checkpoint(model_dir / "serial_1.pt")).eval()
    tokenizer = load_tokenizer(home.tokenizer_path)
    val = prepare_tokens(home, book, tokenizer, 0.1).val
    T = 32
    n_windows = (len(val) - 1) // T
    nll = 0.0
    with torch.no_grad():
        for i in range(n_windows):
            window = torch.from_numpy(val[i * T: i * T + T + 1].astype("int64"))
            with autocast(torch.device("cpu")):  # the precision evaluation runs in (device.py)
                _, loss = model(window[None, :-1], window[None, 1:])
            nll += loss.item() * T
    # The windows' targets are val[1 : n_windows * T + 1] back to back: the bytes are those of their text.
    # (A space the tokenizer wrote after a newline or quotation mark ending val[0] is in val[1] but not in this
    # slice's text, so the two counts may differ by that byte.)
    n_bytes = len(tokenizer.decode(val[1: n_windows * T + 1].tolist()).encode())
    got = evaluate(model, val, tokenizer, T, batch_size=5)
    assert got.tokens == n_windows * T
    assert abs(got.bytes - n_bytes) <= 2
    assert got.loss == pytest.approx(nll / got.tokens, rel=1e-5)
    assert got.bits_per_byte == pytest.approx(nll / (math.log(2) * got.bytes), rel=1e-5)
    assert got.perplexity == pytest.approx(math.exp(got.loss))
    assert result.val_loss == pytest.approx(got.loss, rel=1e-6)


def test_gradient_accumulation_equals_the_bigger_batch(make_home, book, monkeypatch):
    """Batches of 8, or 2 micro-batches of 4 (the same 8 windows, drawn in turn): the same training.
    In float32 and with AdamW: bfloat16 products and Muon's bfloat16 orthogonalisation (where the CPU has
    them) would blur the comparison to a few 1e-5."""
    from hellogpt.core import device

    monkeypatch.setattr(device, "native_bfloat16", lambda device_type: False)
    big, accumulated = make_home("big"), make_home("accumulated")
    train(tiny_config(max_steps=5, dropout=0.0, optimizer="adamw"), big, book)
    train(tiny_config(max_steps=5, dropout=0.0, optimizer="adamw", batch_size=4, grad_accum=2), accumulated, book)
    a, b = read_metrics(big), read_metrics(accumulated)
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) <= 1e-5
    assert a[-1]["tokens"] == b[-1]["tokens"] == 5 * 8 * 32


def test_the_kept_model_is_the_weights_average(make_home, book):
    """From halfway on, the checkpoint's "model" is the moving average of the trained weights (which it
    keeps as "live" to resume), and the reported validation is the average's; ema_decay 0 turns it off."""
    from hellogpt.model.checkpoint import build_model
    from hellogpt.data.tokens import prepare_tokens

    home, plain = make_home("averaged"), make_home("plain")
    result = train(tiny_config(max_steps=20, eval_every=0), home, book)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["averaged_steps"] == 11  # after steps 10 to 20: progress 0.5 to 1
    assert not torch.equal(ckpt["model"]["blocks.0.mlp.fc.weight"], ckpt["live"]["blocks.0.mlp.fc.weight"])
    tokenizer = load_tokenizer(home.tokenizer_path)
    val = prepare_tokens(home, book, tokenizer, 0.1).val
    assert evaluate(build_model(ckpt).eval(), val, tokenizer, 32, 8).loss == pytest.approx(result.val_loss, rel=1e-6)

    off = load_checkpoint(train(tiny_config(max_steps=20, eval_every=0, ema_decay=0.0), plain, book).checkpoint)
    assert "live" not in off and "averaged_steps" not in off
    # Averaging watches the training without changing it.
    assert torch.equal(off["model"]["blocks.0.mlp.fc.weight"], ckpt["live"]["blocks.0.mlp.fc.weight"])


def test_resume_of_weights_without_training_state(make_home, book):
    """Weights imported from Hugging Face (hf.py) have no optimizer, schedule or random state: --resume
    trains them on with fresh optimizer state and says so."""
    from hellogpt.model.checkpoint import save_checkpoint

    home = make_home()
    first = load_checkpoint(train(tiny_config(max_steps=3), home, book).checkpoint)
    save_checkpoint(home.model_dir("hellogpt"), {**first, "optimizer": None, "scheduler": None, "rng": None})
    reporter = CtrlCAt(step=-1)
    result = train(tiny_config(), home, book, resume=True, given={"max_steps": 6}, reporter=reporter)
    assert result.steps == 6 and not result.interrupted
    assert any("has no state for the muon optimizer; it starts afresh" in n for n in reporter.notes)
