"""`hellogpt train / eval / plot` as a user runs them: subprocesses, files on disk, Ctrl-C, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hellogpt.model.checkpoint import load_checkpoint, serials
from hellogpt.cli import main
from hellogpt.core.paths import Home

pytestmark = pytest.mark.integration
TINY = ["--d-model=32", "--n-layers=2", "--n-heads=2", "--d-ffn=64", "--max-seq-len=32", "--warmup-steps=5"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models train fastest on one thread


@pytest.fixture
def home(tmp_path, tokenizer_file) -> Home:
    home = Home(tmp_path / "home")
    home.tokenizer_dir.mkdir(parents=True)
    shutil.copy(tokenizer_file, home.tokenizer_path)
    return home


def records(home: Home, split: str, name: str = "hellogpt") -> list[dict]:
    lines = (home.model_dir(name) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.mark.smoke
def test_train_from_nothing_then_eval_and_plot(tmp_path, book, run_hellogpt, capsys):
    """A fresh home: --yes trains the tokenizer, then the model; eval and plot work on the result."""
    home = Home(tmp_path)
    out = run_hellogpt("--home", tmp_path, "train", "--data", book, "--yes", "--vocab-size=300", *TINY,
                       "--batch-size=8", "--max-steps=12", "--eval-every=6", env=ONE_THREAD)
    assert out.returncode == 0, out.stderr
    model_dir = home.model_dir("hellogpt")
    assert home.tokenizer_path.is_file() and serials(model_dir) == [1]
    assert "Settings: model_name=hellogpt" in out.stdout  # the effective configuration
    assert f"Checkpoint: {model_dir / 'serial_1.pt'}" in out.stdout
    assert "bits per byte" in out.stdout
    final = records(home, "val")[-1]
    assert final["step"] == 12

    # Then the same entry point in this process (a subprocess per command is slow on a busy machine).
    capsys.readouterr()
    assert main(["--home", str(tmp_path), "eval", "--data", str(book), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # nothing but the JSON on standard output
    assert report["serial"] == 1 and report["split"] == "validation"
    assert abs(report["loss"] - final["loss"]) < 1e-5
    assert abs(report["bits_per_byte"] - final["bits_per_byte"]) < 1e-5
    assert main(["--home", str(tmp_path), "eval", "--data", str(book), "--all", "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert whole["split"] == "all" and whole["tokens"] > 5 * report["tokens"]

    (model_dir / "loss_curve.png").unlink()
    assert main(["--home", str(tmp_path), "plot"]) == 0
    assert (model_dir / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_on_a_terminal_it_asks_then_shows_a_live_bar(tmp_path, book):
    import pexpect

    cmd = [sys.executable, "-m", "hellogpt", "--home", str(tmp_path), "train", "--data", str(book),
           "--vocab-size=300", *TINY, "--batch-size=8", "--max-steps=5"]
    child = pexpect.spawn(cmd[0], cmd[1:], encoding="utf-8", timeout=120, dimensions=(30, 200),
                          env={**os.environ, **ONE_THREAD})
    child.expect_exact("[Y/n]")
    child.sendline("")  # Enter: yes, train the tokenizer
    child.expect_exact("step 5/5")
    child.expect_exact("Checkpoint:")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert serials(Home(tmp_path).model_dir("hellogpt")) == [1]


def test_no_tokenizer_and_no_way_to_ask(tmp_path, book, run_hellogpt):
    out = run_hellogpt("--home", tmp_path, "train", "--data", book, "--max-steps=1")
    assert out.returncode == 2
    assert "hellogpt tokenizer train" in out.stderr and "Traceback" not in out.stderr
    assert not Home(tmp_path).tokenizer_path.exists()


def test_ctrl_c_saves_and_exits_130(home, book):
    """First Ctrl-C: the step finishes, a checkpoint is saved and named, exit code 130."""
    cmd = [sys.executable, "-m", "hellogpt", "--home", str(home.root), "train", "--data", str(book), *TINY,
           "--batch-size=8", "--max-steps=1000000", "--eval-every=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ONE_THREAD})
    metrics = home.model_dir("hellogpt") / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    path = home.model_dir("hellogpt") / "serial_1.pt"
    assert "Ctrl-C" in out and f"Checkpoint: {path}" in out and "--resume" in out
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == len(records(home, "train")) >= 3


def test_resume_ignores_other_settings_and_continues(home, book, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["--home", str(home.root), "train", "--data", str(book), *TINY]
    assert main([*common, "--batch-size=8", "--max-steps=4"]) == 0
    assert main([*common, "--resume", "--batch-size=4", "--max-steps=6"]) == 0
    assert "ignoring batch_size=4 (the checkpoint has 8)" in capsys.readouterr().out
    assert serials(home.model_dir("hellogpt")) == [1, 2]
    ckpt = load_checkpoint(home.model_dir("hellogpt") / "serial_2.pt")
    assert ckpt["step"] == 6 and ckpt["config"]["batch_size"] == 8
    assert [r["step"] for r in records(home, "train")] == list(range(1, 7))


def test_torchrun_two_processes_equal_one(tmp_path, tokenizer_file, book, run_hellogpt):
    """2 CPU processes (gloo), each 2 micro-batches of 2 windows, train like 1 process with batches of 8:
    each rank takes its rows of the same draw, DistributedDataParallel averages the gradients (and skips
    the all-reduce on the first micro-batch). Up to 1e-4: Muon orthogonalises in bfloat16 where the CPU has it, which turns
    the float rounding of a different summation order into a few 1e-5 of loss (a wrong share of the
    batch or a missing average would differ by 1e-2 and more)."""
    homes = {}
    for name in ("one", "two"):
        homes[name] = Home(tmp_path / name)
        homes[name].tokenizer_dir.mkdir(parents=True)
        shutil.copy(tokenizer_file, homes[name].tokenizer_path)
    args = ["train", "--data", str(book), *TINY, "--dropout=0", "--max-steps=5", "--eval-every=0"]
    one = run_hellogpt("--home", homes["one"].root, *args, "--batch-size=8", env=ONE_THREAD)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "hellogpt", "--home", str(homes["two"].root), *args, "--batch-size=2",
                          "--grad-accum=2"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **ONE_THREAD})
    output = f"stdout:\n{two.stdout[-3000:]}\nstderr:\n{two.stderr[-3000:]}"
    assert two.returncode == 0, output
    assert "2 processes" in two.stdout and two.stdout.count("Settings:") == 1, output  # rank 0 alone speaks
    a, b = records(homes["one"], "train"), records(homes["two"], "train")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) <= 1e-4, (a, b)
    assert abs(records(homes["one"], "val")[-1]["loss"] - records(homes["two"], "val")[-1]["loss"]) <= 1e-4
    assert serials(homes["two"].model_dir("hellogpt")) == [1]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the threads from Linux's /proc")
def test_torchrun_shutdown_ends_gloo_threads(tmp_path):
    """After distributed.shutdown() gloo's threads end: one that lived on into interpreter exit could
    abort a rank that had finished its work (SIGABRT, "terminate called without an active exception").
    gloo's network loop sees its stop flag between 10 ms waits, so it may take a moment to end (CI saw it
    still listed right after shutdown; here it was gone 11 to 12 ms later); a thread held by a leaked
    group never ends."""
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent("""
        import os, time, torch
        from torch.nn.parallel import DistributedDataParallel
        from hellogpt.core import distributed

        def gloo_threads():
            names = []
            for task in os.listdir("/proc/self/task"):
                try:
                    names.append(open(f"/proc/self/task/{task}/comm").read().strip())
                except FileNotFoundError:  # a thread that has just ended
                    pass
            return [n for n in names if "gloo" in n]

        ctx = distributed.init(torch.device("cpu"))
        DistributedDataParallel(torch.nn.Linear(4, 4))
        distributed.shutdown()
        deadline = time.monotonic() + 2
        while gloo_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(1, f"rank {ctx.rank} gloo threads: {gloo_threads()}\\n".encode())  # one write: no interleaving
    """))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **ONE_THREAD})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0 gloo threads: []" in run.stdout and "rank 1 gloo threads: []" in run.stdout, run.stdout


def test_settings_file_and_flags(home, book, tmp_path, capsys, monkeypatch):
    """Defaults, then the TOML file, then the flags: the checkpoint stores the result."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = tmp_path / "tiny.toml"
    settings.write_text('model_name = "from-toml"\nd_model = 32\nn_layers = 2\nn_heads = 2\nd_ffn = 64\n'
                        "max_seq_len = 32\nbatch_size = 8\nmax_steps = 50\nlr = 3e-3\n")
    assert main(["--home", str(home.root), "train", "--data", str(book), "--config", str(settings),
                 "--max-steps=3", "--eval-every=0"]) == 0
    config = load_checkpoint(home.model_dir("from-toml") / "serial_1.pt")["config"]
    assert (config["d_model"], config["lr"], config["max_steps"]) == (32, 3e-3, 3)
    assert "Settings: model_name=from-toml" in capsys.readouterr().out


def test_plot_without_metrics_says_what_to_do(tmp_path, capsys):
    assert main(["--home", str(tmp_path), "plot", "--model-name", "nothing"]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl" in err and "hellogpt train" in err


def test_resume_and_eval_name_a_corrupt_checkpoint(home, book, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["--home", str(home.root), "--data", str(book)]
    assert main([*common, "train", *TINY, "--batch-size=8", "--max-steps=2", "--eval-every=0"]) == 0
    path = home.model_dir("hellogpt") / "serial_1.pt"
    path.write_bytes(path.read_bytes()[:1000])
    capsys.readouterr()
    for command in (["train", "--resume"], ["eval"]):
        assert main([*common, *command]) == 2
        err = capsys.readouterr().err
        assert f"Checkpoint {path} is truncated or corrupt" in err and "Traceback" not in err


def test_settings_before_the_command_count():
    """`hellogpt --time 60 train` is `hellogpt train --time 60`; after the command wins when both are given."""
    from hellogpt.cli import build_parser
    from hellogpt.core.settings import given_settings_from_args

    def given(*argv):
        return given_settings_from_args(build_parser().parse_args(argv))

    assert given("--time", "60", "--size", "6", "train") == given("train", "--time", "60", "--size", "6") \
        == {"time": 60.0, "size": 6}
    assert given("--time", "5", "train", "--time", "60") == {"time": 60.0}
    assert given("train") == {}
