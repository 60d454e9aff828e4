"""A model name becomes one folder under artifacts/checkpoints/: every command refuses one that would be a
path, or a hidden folder, before it writes anything (tests/core/test_paths.py: which names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellogpt.cli import main

pytestmark = pytest.mark.integration  # the command line in this process, on real folders

@pytest.mark.parametrize("command", [
    ["train", "--yes"], ["generate", "Elizabeth"], ["eval"], ["plot"], ["export", "OUT"], ["inspect", "Elizabeth"],
    ["import-hf", "SOURCE"],
])
def test_every_command_refuses_a_path_as_a_model_name(tmp_path, capsys, command):
    source = tmp_path / "source"
    source.mkdir()
    home = tmp_path / "home"
    argv = [str(source) if a == "SOURCE" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    for name in ("../x", "/tmp/x", "a/b", ".hidden"):
        outside_before = Path("/tmp/x").exists()
        assert main(["--home", str(home), *argv, "--model-name", name]) == 2, name
        out, err = capsys.readouterr()
        assert err.startswith(f"error: {name!r} cannot be a model name") and err.count("\n") == 1, err
        assert "Use letters, digits" in err and out == ""
        assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]  # nothing written: not the home, not out
        assert Path("/tmp/x").exists() == outside_before
