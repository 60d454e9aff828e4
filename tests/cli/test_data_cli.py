"""`hellogpt tokenizer train` and `hellogpt data info` as a user runs them, bad input included."""

from __future__ import annotations

import pytest

from hellogpt.cli import main

pytestmark = pytest.mark.integration


def bad_books(tmp_path, kind: str):
    """(--data value, what the message must say) for each kind of bad input."""
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "good.txt").write_text("A good book.\n" * 50)
    bad = folder / "bad.txt"
    if kind == "missing folder":
        return tmp_path / "nowhere", [f"The book folder {tmp_path / 'nowhere'} does not exist", "hellogpt data download"]
    if kind == "no .txt files":
        (folder / "good.txt").rename(folder / "good.md")
        return folder, [f"There are no .txt files in {folder}", "copy plain-text .txt books into it"]
    if kind == "empty file":
        bad.write_bytes(b"")
        return folder, [f"The book {bad} is empty", "remove it from the folder"]
    if kind == "binary file":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
        return folder, [f"The file {bad} looks binary", "byte offset 8", "plain UTF-8 text"]
    if kind == "non-UTF-8 file":
        bad.write_bytes("Na\u00efve r\u00e9sum\u00e9\n".encode("latin-1"))
        return folder, [f"The file {bad} is not valid UTF-8", "0xef at byte offset 2", "Save it as UTF-8"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing folder", "no .txt files", "empty file", "binary file", "non-UTF-8 file"])
def test_bad_input_is_one_clear_error(tmp_path, run_hellogpt, kind):
    data, expected = bad_books(tmp_path, kind)
    result = run_hellogpt("--home", tmp_path, "tokenizer", "train", "--data", data, "--vocab-size", "300")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    for words in expected:
        assert words in result.stderr
    assert not (tmp_path / "artifacts" / "tokenizer" / "tokenizer.json").exists()


@pytest.mark.parametrize("args, expected", [
    (["tokenizer", "train", "--vocab-size", "10"], "--vocab-size 10 is too small"),
    (["data", "info", "--val-fraction", "1.5"], "--val-fraction 1.5 is out of range"),
    (["data", "download", "0"], "Book id 0 is not a Project Gutenberg id"),
    (["data", "download", "--timeout", "0"], "--timeout 0.0 must be a positive number"),
])
def test_bad_settings(tmp_path, corpus_dir, capsys, args, expected):
    assert main(["--home", str(tmp_path), "--data", str(corpus_dir / "pg11.txt"), *args]) == 2
    assert expected in capsys.readouterr().err


def test_train_then_info(tmp_path, run_hellogpt, corpus_dir):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("pg11.txt", "pg55.txt"):
        (data / name).write_bytes((corpus_dir / name).read_bytes())

    before = run_hellogpt("--home", tmp_path, "data", "info")
    assert before.returncode == 0, before.stderr
    assert "pg11.txt" in before.stdout and "144,600" in before.stdout  # Alice's characters, once cleaned
    assert "No tokenizer yet" in before.stdout

    trained = run_hellogpt("--home", tmp_path, "tokenizer", "train", "--vocab-size", "600")
    assert trained.returncode == 0, trained.stderr
    assert "training part of 2 book(s)" in trained.stdout and "vocabulary 600" in trained.stdout

    after = run_hellogpt("--home", tmp_path, "data", "info", "--val-fraction", "0.2")
    assert after.returncode == 0, after.stderr
    for words in ("train tokens", "val tokens", "chars/token", "pg55.txt", "last 20%", "Cached in"):
        assert words in after.stdout
