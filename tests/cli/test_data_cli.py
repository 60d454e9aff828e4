"""`hellogpt data bundled`, `hellogpt tokenizer train` and `hellogpt data info` as a user runs them, bad input included."""

from __future__ import annotations

import pytest

from hellogpt.cli import main
from hellogpt.data.books import bundled_text
from helpers import closed_port_url

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
def test_bad_settings(tmp_path, book, capsys, args, expected):
    assert main(["--home", str(tmp_path), "--data", str(book), *args]) == 2
    assert expected in capsys.readouterr().err


def test_bundled_books_offline(tmp_path, run_hellogpt):
    """`hellogpt data bundled` writes the two books that come with HelloGPT, as Gutenberg's files, without
    a network; a second run leaves the books there as they are."""
    data = tmp_path / "data"
    result = run_hellogpt("--home", tmp_path, "data", "bundled", env={"HELLOGPT_GUTENBERG_MIRROR": closed_port_url()})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in data.iterdir()) == ["pg1342.txt", "pg55.txt"]
    for book_id in (1342, 55):
        assert (data / f"pg{book_id}.txt").read_bytes() == bundled_text(book_id)
    assert f"{data / 'pg1342.txt'} (Pride and Prejudice)" in result.stdout
    assert f"{data / 'pg55.txt'} (The Wonderful Wizard of Oz)" in result.stdout
    assert "hellogpt tokenizer train" in result.stdout  # what to do next

    (data / "pg55.txt").write_text("Oz, as I edited it")
    written = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    again = run_hellogpt("--home", tmp_path, "data", "bundled")
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == written  # nothing rewritten, nothing added
    assert (data / "pg55.txt").read_text() == "Oz, as I edited it"

    elsewhere = tmp_path / "elsewhere"
    assert main(["--home", str(tmp_path), "data", "bundled", "--data", str(elsewhere)]) == 0  # --data says where
    assert sorted(p.name for p in elsewhere.iterdir()) == ["pg1342.txt", "pg55.txt"]


def test_train_then_info(tmp_path, run_hellogpt):
    assert main(["--home", str(tmp_path), "data", "bundled"]) == 0

    before = run_hellogpt("--home", tmp_path, "data", "info")
    assert before.returncode == 0, before.stderr
    assert "pg55.txt" in before.stdout and "207,821" in before.stdout  # Oz's characters, once cleaned
    assert "pg1342.txt" in before.stdout and "728,744" in before.stdout  # Pride and Prejudice's
    assert "No tokenizer yet" in before.stdout

    trained = run_hellogpt("--home", tmp_path, "tokenizer", "train", "--vocab-size", "600")
    assert trained.returncode == 0, trained.stderr
    assert "training part of 2 book(s)" in trained.stdout and "vocabulary 600" in trained.stdout

    after = run_hellogpt("--home", tmp_path, "data", "info", "--val-fraction", "0.2")
    assert after.returncode == 0, after.stderr
    for words in ("train tokens", "val tokens", "chars/token", "pg55.txt", "last 20%", "Cached in"):
        assert words in after.stdout
