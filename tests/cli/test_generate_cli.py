"""`hellogpt generate` and `hellogpt info` as a user runs them."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from hellogpt.cli import main
from hellogpt.core.paths import Home

pytestmark = pytest.mark.integration
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models; and 2 threads on a busy 2-core machine crawl


def test_pipe_friendly_continuation(tiny_home, run_hellogpt):
    greedy = ("--home", tiny_home.root, "generate", "Elizabeth", "--model-name", "tiny", "--max-new-tokens", "30",
              "--temperature", "0")
    r = run_hellogpt(*greedy, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    assert "\033" not in r.stdout and r.stderr == ""  # no colours, no progress chatter
    record = json.loads(run_hellogpt(*greedy, "--json", env=ONE_THREAD).stdout)
    assert r.stdout == record["text"] + "\n"  # only the continuation (greedy: the same one both times)
    assert record["new_tokens"] == 30 or record["stop_reason"] == "eot"


def test_json_record(tiny_home, run_hellogpt):
    r = run_hellogpt("--home", tiny_home.root, "generate", "It is a truth", "--model-name", "tiny", "--json",
                     "--max-new-tokens", "12", "--seed", "7", env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["model_name"] == "tiny" and record["serial"] == 1 and record["prompt"] == "It is a truth"
    assert record["seed"] == 7 and record["settings"]["max_new_tokens"] == 12
    assert 1 <= record["new_tokens"] <= 12 and record["prompt_tokens"] >= 1
    assert record["stop_reason"] in ("max_new_tokens", "eot")
    assert isinstance(record["text"], str) and record["seconds"] > 0 and record["tokens_per_second"] > 0
    assert record["prompt_tokens_dropped"] == 0


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["generate", "   "], "prompt is empty"),
    (["generate", "Elizabeth"], "Model 'hellogpt' has no checkpoint.*Models with checkpoints: tiny"),
    (["generate", "Elizabeth", "--model-name", "nope"], "Model 'nope' has no checkpoint"),
    (["generate", "Elizabeth", "--model-name", "tiny", "--serial", "9"], "no serial 9; it has serials 1"),
    (["generate", "Elizabeth", "--model-name", "tiny", "--temperature", "-1"], "Temperature must be 0"),
    (["generate", "Elizabeth", "--model-name", "tiny", "--top-p", "2"], "Top-p must be above 0"),
])
def test_user_errors_are_one_clear_message(tiny_home, capsys, argv, message):
    code, out, err = run(capsys, "--home", tiny_home.root, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_missing_and_mismatched_tokenizer(tiny_home, tmp_path, capsys):
    home = Home(tmp_path / "home")
    shutil.copytree(tiny_home.root, home.root)
    home.tokenizer_path.unlink()
    code, _, err = run(capsys, "--home", home.root, "generate", "Elizabeth", "--model-name", "tiny")
    assert code == 2 and "No tokenizer at" in err and "hellogpt tokenizer train" in err

    from hellogpt.data.tokenizer import train_bpe

    train_bpe(["a different book altogether"] * 20, vocab_size=300, show_progress=False).save(str(home.tokenizer_path))
    code, _, err = run(capsys, "--home", home.root, "generate", "Elizabeth", "--model-name", "tiny")
    assert code == 2 and "trained with a different tokenizer" in err


def test_info_lists_models_tokenizer_and_data(tiny_home, capsys):
    code, out, _ = run(capsys, "--home", tiny_home.root, "info")
    assert code == 0
    assert "tiny" in out and "7.500" in out  # the model, its serial row and validation bits per byte
    assert "vocabulary 400" in out
    assert "1 book(s)" in out


def test_info_in_an_empty_home_says_what_to_do(tmp_path, capsys):
    code, out, _ = run(capsys, "--home", tmp_path, "info")
    assert code == 0
    assert "No trained models" in out and "hellogpt tokenizer train" in out and "hellogpt data download" in out
