"""Checkpoints survive kill -9 mid-save, two writers never share a serial, and bad files give clear errors."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hellogpt.model.checkpoint import SERIAL_RE, TMP_PREFIX, load_checkpoint, save_checkpoint, serials
from hellogpt.core.errors import UserError

# A writer that saves 8 MB checkpoints in a loop, so that most of its time is spent saving. Each holds
# its writer's id and number, and a tensor filled with that number, to check that what loads is whole.
WRITER = """
import sys, time
from pathlib import Path
import numpy as np, torch
from hellogpt.model.checkpoint import save_checkpoint

model_dir, writer, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
print("ready", flush=True)
while not go.exists():  # start when told to
    time.sleep(0.005)
for i in range(1, count + 1):
    w = torch.from_numpy(np.full(2_000_000, i, dtype=np.float32))
    path = save_checkpoint(model_dir, {"model": {"w": w}, "model_config": {}, "writer": writer, "number": i})
    print(path.name, flush=True)
"""


def start_writers(model_dir, names: list[str], count: int, go) -> list[subprocess.Popen]:
    """Writer processes, started together (Python and torch take a while to load) and ready to save
    when the file `go` (or go.<name>) appears."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(model_dir), name, str(count), str(go).format(name)],
                              stdout=subprocess.PIPE, text=True) for name in names]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    return procs


def check_whole(model_dir) -> list[tuple[str, int]]:
    """Every serial loads and holds one writer's complete payload; returns (writer, number) of each."""
    found = []
    for name in sorted(os.listdir(model_dir)):
        assert SERIAL_RE.match(name) or name.startswith(TMP_PREFIX), f"unexpected file {name}"
        if SERIAL_RE.match(name):
            ckpt = load_checkpoint(model_dir / name)
            assert (ckpt["model"]["w"] == ckpt["number"]).all() and ckpt["model"]["w"].numel() == 2_000_000
            found.append((ckpt["writer"], ckpt["number"]))
    return found


@pytest.mark.integration
def test_kill_9_while_saving_leaves_every_serial_whole(tmp_path):
    model_dir = tmp_path / "checkpoints" / "m"
    model_dir.mkdir(parents=True)
    rounds = [f"w{i}" for i in range(4)]
    writers = start_writers(model_dir, rounds, count=1000, go=tmp_path / "go.{}")
    rng = random.Random(0)
    for round_, (name, proc) in enumerate(zip(rounds, writers)):
        (tmp_path / f"go.{name}").touch()
        assert proc.stdout.readline().startswith("serial_")  # saving in earnest
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        saved = check_whole(model_dir)
        assert len(saved) == len(serials(model_dir)) >= round_ + 1
    assert serials(model_dir) == list(range(1, len(serials(model_dir)) + 1))  # no gaps, no reuse
    # The next save (by a live process) removes the temporary files the killed writers left.
    save_checkpoint(model_dir, {"model": {}, "model_config": {}})
    assert not [n for n in os.listdir(model_dir) if n.startswith(TMP_PREFIX)]


@pytest.mark.integration
def test_two_writers_at_once_get_distinct_serials(tmp_path):
    model_dir = tmp_path / "checkpoints" / "m"
    model_dir.mkdir(parents=True)
    writers = start_writers(model_dir, ["a", "b"], count=5, go=tmp_path / "go")
    (tmp_path / "go").touch()  # both start saving at the same moment
    names = []
    for proc in writers:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        names += out.split()
    assert len(set(names)) == 10  # each save got its own serial
    assert serials(model_dir) == list(range(1, 11))
    assert sorted(check_whole(model_dir)) == [(w, i) for w in "ab" for i in range(1, 6)]


@pytest.mark.parametrize("damage", ["truncate", "empty", "not_a_checkpoint"])
def test_a_damaged_checkpoint_gives_a_clear_error(tmp_path, damage):
    path = save_checkpoint(tmp_path, {"model": {"w": torch.ones(1000)}, "model_config": {}})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path = save_checkpoint(tmp_path, {"weights": torch.ones(3)})
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


@settings(max_examples=150, deadline=None)
@given(start=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."]),
       rest=st.binary(max_size=300), flip=st.integers(0, 10**6))
def test_any_damaged_bytes_give_a_clear_error(tmp_path_factory, start, rest, flip):
    """Random bytes, or a real checkpoint with a byte changed: loading either never raises anything but UserError
    (torch.load alone raises IndexError, KeyError, ... on such bytes)."""
    folder = tmp_path_factory.mktemp("damaged")
    path = folder / "serial_1.pt"
    path.write_bytes(start + rest)
    with pytest.raises(UserError, match="truncated or corrupt|not a HelloGPT checkpoint"):
        load_checkpoint(path)
    real = bytearray(save_checkpoint(folder, {"model": {"w": torch.ones(8)}, "model_config": {}}).read_bytes())
    real[flip % len(real)] ^= 0xFF
    path.write_bytes(bytes(real))
    try:
        ckpt = load_checkpoint(path)  # a changed byte in the tensor data still loads
    except UserError:
        return
    assert set(ckpt) == {"model", "model_config"}
