"""Faults and bad input, the way they happen: real signals to real training processes, a full disk and a
read-only home (real mounts where the test runs as root, else a file-size limit), kill -9 in the middle of
writing, damaged and hostile files, and a fuzz of the settings through the real command line.

Every case ends the same way: exit 0, or exit 2 (128 + a signal's number for a stop) with a message and no
traceback; no half-written file under a final name; nothing written outside the home.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hellogpt.cli import main
from hellogpt.core.paths import Home
from hellogpt.model.checkpoint import SERIAL_RE, TMP_PREFIX, load_checkpoint, serials
from helpers import bundled

pytestmark = pytest.mark.integration

TINY = ("--size", "1", "--vocab-size", "300", "--eval-every", "0")  # trains in a blink


def hellogpt(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hellogpt", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def finished(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


@pytest.fixture
def home(tmp_path) -> Home:
    """A home with one small book (40,000 characters of Pride and Prejudice) in data/."""
    home = Home(tmp_path / "home")
    home.data_dir.mkdir(parents=True)
    (home.data_dir / "pride.txt").write_text(bundled(1342)[5_000:45_000], encoding="utf-8")
    return home


def everything_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def assert_clean_refusal(code: int, out: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out and "error:" in out, out


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/tmp/x", "../../x", "..", ".", "", "a/b", "x" * 300, ".hidden", "-rf"])
def test_a_model_name_that_is_not_one_folder_is_refused_everywhere(home, tmp_path, name, capsys):
    before = everything_under(tmp_path)
    for args in (["train", "--max-steps", "1", "--yes"], ["plot"], ["inspect", "Elizabeth"], ["eval"],
                 ["generate", "Elizabeth"], ["export", str(home.root / "out")]):
        assert main(["--home", str(home.root), *args, f"--model-name={name}"]) == 2
        err = capsys.readouterr().err
        assert "cannot be a model name" in err, (args, err)
    settings_file = tmp_path / "s.toml"
    settings_file.write_text(f"model_name = {json.dumps(name)}\n")
    assert main(["--home", str(home.root), "train", "--config", str(settings_file), "--max-steps", "1"]) == 2
    assert "cannot be a model name" in capsys.readouterr().err
    assert everything_under(tmp_path) == before | {settings_file}  # nothing written, inside the home or out


def test_the_console_refuses_a_model_name_and_carries_on(tiny_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tiny_home.root, home)
    proc = hellogpt("--home", home, "--model-name", "tiny", stdin=subprocess.PIPE)
    out, _ = proc.communicate("/model ../../x\n/model /tmp/x 1\n/info\nX\n", timeout=120)
    assert proc.returncode == 0, out
    assert out.count("cannot be a model name") == 2 and "model: 'tiny'" in out and "Traceback" not in out


# --- signals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # SIGINT (Ctrl-C): tests/training
def test_a_stop_signal_saves_a_serial_that_resumes(home, signum):
    proc = hellogpt("--home", home.root, "train", "--yes", "--time", "600", *TINY, env={**os.environ,
                                                                                        "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:  # wait until training runs
        if line.startswith("step 3"):
            break
    proc.send_signal(signum)
    code, out = finished(proc)
    assert code == 128 + signum, out
    assert "Traceback" not in out and "Stopped by" in out
    ckpt = load_checkpoint(home.model_dir("hellogpt") / "serial_1.pt")
    assert ckpt["step"] >= 3
    resumed = subprocess.run([sys.executable, "-m", "hellogpt", "--home", str(home.root), "train", "--resume",
                              "--max-steps", str(ckpt["step"] + 2)], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert load_checkpoint(home.model_dir("hellogpt") / "serial_2.pt")["step"] == ckpt["step"] + 2


def test_sigterm_to_torchrun_saves_a_serial(home):
    """A scheduler stops a job by signalling torchrun, which passes SIGTERM on to every process: they finish
    the step together and rank 0 saves."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node=2", "-m", "hellogpt", "--home",
                             str(home.root), "train", "--yes", "--max-steps", "1000000", *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:
        if line.startswith("step 3"):
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert "Stopped by SIGTERM" in out, out
    assert load_checkpoint(home.model_dir("hellogpt") / "serial_1.pt")["step"] >= 3


# --- disks ---------------------------------------------------------------------------------------------


@contextmanager
def mounted(kind: str, folder: Path, source: Path | None = None):
    """A small tmpfs, or a read-only bind mount of `source`, at `folder` (root only); skips elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        commands = [["mount", "-t", "tmpfs", "-o", "size=900k", "tmpfs", str(folder)]]
    else:
        commands = [["mount", "--bind", str(source), str(folder)], ["mount", "-o", "remount,bind,ro", str(folder)]]
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small or read-only file system (the file-size limit test covers a "
                    "failing write without it)")
    for command in commands:
        if subprocess.run(command, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(folder)], capture_output=True)
            pytest.skip(f"cannot mount here: {' '.join(command)}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_loses_no_serial_and_says_so(home, tmp_path):
    with mounted("tmpfs", tmp_path / "full") as full:
        code, out = finished(hellogpt("--home", full, "--data", home.data_dir, "train", "--yes", "--max-steps", "5",
                                      "--size", "2", "--vocab-size", "2048"))
        assert_clean_refusal(code, out)
        assert "no space left" in out
        model_dir = Home(full).model_dir("hellogpt")
        assert not serials(model_dir) and not [p for p in model_dir.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_save_past_the_file_size_limit_fails_cleanly(home):
    """ulimit -f: every write beyond it fails (EFBIG; Python ignores SIGXFSZ). The token cache and tokenizer
    fit under the limit, a checkpoint does not."""
    limit = 200_000

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = hellogpt("--home", home.root, "train", "--yes", "--max-steps", "3", *TINY, preexec_fn=small_files)
    code, out = finished(proc)
    assert_clean_refusal(code, out)
    assert "Could not save a checkpoint" in out
    model_dir = home.model_dir("hellogpt")
    assert not serials(model_dir) and not [p for p in model_dir.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_read_only_home_gives_a_message_for_every_command(tiny_home, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_home.root, source)
    (Home(source).model_dir("tiny") / "metrics.jsonl").write_text('{"split": "train", "step": 1, "loss": 5.0}\n')
    with mounted("ro", tmp_path / "ro", source) as ro:
        for args in (["train", "--yes", "--max-steps", "1", "--model-name", "other"], ["tokenizer", "train"],
                     ["train", "--resume", "--model-name", "tiny", "--max-steps", "1"], ["plot", "--model-name", "tiny"],
                     ["inspect", "Jane", "--model-name", "tiny"], ["export", ro / "out", "--model-name", "tiny"],
                     ["eval", "--all", "--model-name", "tiny"], ["data", "bundled"]):
            code, out = finished(hellogpt("--home", ro, *args))
            assert_clean_refusal(code, out)
            assert "Read-only file system" in out and str(ro) in out, (args, out)


# --- text ----------------------------------------------------------------------------------------------


def test_invalid_utf8_in_a_prompt_is_replaced_not_fatal(tiny_home):
    bad = b"caf\xe9 \xed\xa0\x80"  # a Latin-1 byte and an encoded lone surrogate
    console = subprocess.run([sys.executable, "-m", "hellogpt", "--home", str(tiny_home.root), "--model-name", "tiny"],
                             input=bad + b"\n/max 5\nX\n", capture_output=True, timeout=120)
    assert console.returncode == 0 and b"Traceback" not in console.stderr + console.stdout
    assert "caf\ufffd".encode() in console.stdout and b"tokens/s" in console.stdout
    for command in (["generate"], ["inspect"]):
        run = subprocess.run([sys.executable.encode(), b"-m", b"hellogpt", b"--home", bytes(tiny_home.root),
                              *[c.encode() for c in command], b"--model-name", b"tiny", bad,
                              *([b"--max-new-tokens", b"5"] if command == ["generate"] else
                                [b"--out", bytes(tiny_home.root.parent / f"r{os.getpid()}{time.time_ns()}")])],
                             capture_output=True, timeout=120)
        assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr


# --- settings ------------------------------------------------------------------------------------------


BAD = [("--n-heads", "-2"), ("--d-model", "-64"), ("--n-layers", "-1"), ("--d-ffn", "-5"), ("--beta1", "5"),
       ("--device", "bogus"), ("--device", "cuda:7"), ("--epochs", "inf"), ("--seed", str(10**30)),
       ("--lr", "inf"), ("--lr", "nan"), ("--time", "inf"), ("--n-heads", "3"), ("--vocab-size", "5")]


@pytest.mark.parametrize("flag,value", BAD)
def test_out_of_range_settings_are_refused_before_any_work(home, tmp_path, capsys, flag, value):
    before = everything_under(tmp_path)
    assert main(["--home", str(home.root), "train", "--yes", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and flag.lstrip("-").replace("-", "_") in err.replace("-", "_"), err
    assert everything_under(tmp_path) == before


@pytest.mark.parametrize("path_kind", ["binary", "folder"])
def test_a_settings_file_that_is_not_toml_is_refused(home, tmp_path, capsys, path_kind):
    config = tmp_path / "settings"
    if path_kind == "binary":
        config.write_bytes(bytes(range(256)) * 4)
    else:
        config.mkdir()
    assert main(["--home", str(home.root), "train", "--config", str(config)]) == 2
    assert str(config) in capsys.readouterr().err


def test_a_diverging_run_stops_and_never_saves_a_broken_serial(home):
    code, out = finished(hellogpt("--home", home.root, "train", "--yes", "--max-steps", "200", "--lr", "1000",
                                  "--muon-lr", "1000", *TINY))
    assert_clean_refusal(code, out)
    assert "diverged" in out
    assert not serials(home.model_dir("hellogpt"))


@pytest.mark.parametrize("flags", [["--temperature", "1e-300"], ["--top-p", "1e-300"], ["--seed", str(10**30)],
                                   ["--temperature", "nan"], ["--repetition-penalty", "inf"], ["--top-k", "-3"]])
def test_generation_settings_at_their_edges(tiny_home, flags):
    run = subprocess.run([sys.executable, "-m", "hellogpt", "--home", str(tiny_home.root), "generate", "Jane",
                          "--model-name", "tiny", "--max-new-tokens", "4", *flags], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode in (0, 2) and "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0 or run.stderr.startswith("error: ")


SETTINGS = st.sampled_from(["--size", "--max-seq-len", "--d-model", "--n-layers", "--n-heads", "--d-ffn", "--dropout",
                            "--batch-size", "--grad-accum", "--lr", "--muon-lr", "--min-lr-ratio", "--warmup-steps",
                            "--weight-decay", "--beta1", "--beta2", "--grad-clip", "--ema-decay", "--time",
                            "--epochs", "--max-steps", "--eval-every", "--save-every", "--seed", "--vocab-size",
                            "--val-fraction", "--optimizer", "--gelu", "--device", "--model-name"])
VALUES = st.one_of(st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True).map(repr),
                   st.sampled_from(["", "inf", "-inf", "nan", "muon", "exact", "cpu", "x" * 200, "../x", "1e309"]),
                   st.text(max_size=20))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(SETTINGS, VALUES), min_size=1, max_size=4), as_file=st.booleans())
def test_fuzzed_settings_exit_0_or_2_and_write_nothing(tmp_path, pairs, as_file):
    """Through the real parser (or a settings file): a bad value is refused with a message; a good one goes on
    until the missing books stop it (exit 2), before any training. Nothing is written anywhere."""
    home = tmp_path / "fuzz-home"
    args = ["--home", str(home), "train", "--data", str(tmp_path / "no-books")]
    if as_file:
        settings_file = tmp_path / "fuzz.toml"
        lines = [f"{flag[2:].replace('-', '_')} = {json.dumps(value)}" for flag, value in pairs]
        settings_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        args += ["--config", str(settings_file)]
    else:
        args += [part for pair in pairs for part in pair]
    before = everything_under(tmp_path)
    try:
        code = main(args)
    except SystemExit as e:  # argparse refuses what is not a number or not a choice
        code = e.code
    assert code == 2
    assert everything_under(tmp_path) == before


# --- untrusted model files -----------------------------------------------------------------------------


def gpt2_folder(folder: Path, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shape = {"model_type": "gpt2", "vocab_size": 300, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 2}
    (folder / "config.json").write_text(json.dumps({**shape, **config}))
    return folder


@pytest.mark.parametrize("config,expected", [
    ({"n_embd": 10**9}, "d_model"), ({"n_layer": 10**7}, "n_layers"), ({"n_head": 0}, "n_heads"),
    ({"n_embd": -64}, "d_model"), ({"n_embd": "64"}, "d_model"), ({"resid_pdrop": 5}, "dropout"),
    ({"n_embd": 90_000, "n_layer": 900, "n_head": 1}, "memory"),
])
def test_import_checks_config_json_before_allocating(tmp_path, capsys, config, expected):
    folder = gpt2_folder(tmp_path / "model", **config)
    started = time.perf_counter()
    assert main(["--home", str(tmp_path / "home"), "import-hf", str(folder)]) == 2
    assert expected in capsys.readouterr().err and time.perf_counter() - started < 10
    assert not (tmp_path / "home" / "artifacts" / "checkpoints").exists() or \
        not any((tmp_path / "home" / "artifacts" / "checkpoints").iterdir())


def test_a_hostile_weights_file_is_refused_with_its_name(tmp_path, tiny_home, capsys):
    folder = gpt2_folder(tmp_path / "model", vocab_size=400)  # the tokenizer's size
    shutil.copy(tiny_home.tokenizer_path, folder / "tokenizer.json")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02e.")
    assert main(["--home", str(tmp_path / "home"), "import-hf", str(folder)]) == 2
    assert str(folder / "pytorch_model.bin") in capsys.readouterr().err


def test_a_checkpoint_whose_stored_config_is_out_of_range_is_refused(tiny_home, tmp_path, capsys):
    import torch

    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home.root, home.root)
    path = home.model_dir("tiny") / "serial_1.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["n_layers"] = 10**7
    torch.save(ckpt, path)
    assert main(["--home", str(home.root), "generate", "Jane", "--model-name", "tiny"]) == 2
    assert "n_layers" in capsys.readouterr().err


# --- leftovers -----------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("work", ["cache", "export", "save"])
def test_kill_9_mid_write_leaves_no_half_file_and_the_next_run_cleans_up(tiny_home, tmp_path, work):
    """kill -9 at a random moment of the work; afterwards no final name holds a partial file, and the next
    run of the same work removes what the killed process left."""
    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home.root, home.root)
    (home.data_dir / "more.txt").write_text(bundled(1342)[:400_000], encoding="utf-8")  # a cache that takes a while
    command = {"cache": ["eval", "--all", "--model-name", "tiny"],
               "export": ["export", home.root / "exported", "--model-name", "tiny"],
               "save": ["train", "--model-name", "tiny", "--resume", "--max-steps", "1"]}[work]
    rng = random.Random(work)
    for _ in range(2):
        proc = hellogpt("--home", home.root, *command)
        time.sleep(rng.uniform(0.5, 3.0))
        proc.kill()
        proc.wait()
        if (home.root / "exported").exists():
            shutil.rmtree(home.root / "exported")  # only whole: checked by export's own test; redo the export
    for serial in serials(home.model_dir("tiny")):
        load_checkpoint(home.model_dir("tiny") / f"serial_{serial}.pt")  # every serial loads
    code, out = finished(hellogpt("--home", home.root, *command))
    assert code == 0, out
    leftovers = [p for p in home.root.rglob(".*.tmp")]
    assert not leftovers, leftovers


def test_a_dead_process_temporaries_are_removed_by_the_next_run(tiny_home, tmp_path):
    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home.root, home.root)
    pid = dead_pid()
    stale_cache = home.tokens_dir / f".0123456789abcdef.{pid}-deadbeef.tmp"
    stale_cache.mkdir(parents=True)
    (stale_cache / "train.bin").write_bytes(b"\0" * 1000)
    stale_serial = home.model_dir("tiny") / f"{TMP_PREFIX}{pid}-deadbeef.tmp"
    stale_serial.write_bytes(b"half")
    mine = home.model_dir("tiny") / f"{TMP_PREFIX}{os.getpid()}-cafecafe.tmp"  # a living process: kept
    mine.write_bytes(b"in progress")
    assert main(["--home", str(home.root), "train", "--model-name", "tiny", "--resume", "--max-steps", "1"]) == 0
    assert not stale_serial.exists() and mine.exists()
    # The token cache's leftover goes when a cache is next built there.
    assert main(["--home", str(home.root), "eval", "--all", "--model-name", "tiny", "--json"]) == 0
    assert not stale_cache.exists()


def test_info_lists_every_model_and_marks_a_damaged_serial(tiny_home, tmp_path, capsys):
    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home.root, home.root)
    shutil.copytree(home.model_dir("tiny"), home.model_dir("alpha"))
    (home.model_dir("alpha") / "serial_1.pt").write_bytes(b"garbage")
    assert main(["--home", str(home.root), "info"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "damaged" in out and "tiny" in out


def test_two_trainers_on_one_name_keep_their_records_apart(home):
    procs = [hellogpt("--home", home.root, "train", "--yes", "--max-steps", "10", *TINY) for _ in range(2)]
    for proc in procs:
        code, out = finished(proc)
        assert code == 0, out
    records = [json.loads(line) for line in (home.model_dir("hellogpt") / "metrics.jsonl").read_text().splitlines()]
    runs = {r["run"] for r in records}
    assert 1 <= len(runs) <= 2  # the file was started by one run, or both wrote into it
    for run in runs:  # each run's own steps count 1, 2, ... with no other run's in between
        steps = [r["step"] for r in records if r["run"] == run and r["split"] == "train"]
        assert steps == sorted(steps) and len(steps) == len(set(steps))
    ids = {load_checkpoint(home.model_dir("hellogpt") / f"serial_{n}.pt")["run_id"] for n in (1, 2)}
    assert len(ids) == 2  # two models, two ids
    assert all(SERIAL_RE.match(p.name) or not p.name.endswith(".pt") for p in home.model_dir("hellogpt").iterdir())
