"""Downloading books, against a local HTTP server in Gutenberg's layout that serves the bundled books (1342
and 55) and made-up ones for the other ids (helpers.gutenberg_books)."""

from __future__ import annotations

import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from hellogpt.core.errors import UserError
from hellogpt.data.gutenberg import DEFAULT_BOOKS, DownloadProgress, download_books
import helpers
from helpers import QuietHandler, closed_port_url, gutenberg_books, write_mirror

pytestmark = pytest.mark.integration


class Handler(QuietHandler):
    """Serves files; paths under /stall/ never answer in time, paths under /cut/ break off mid-file."""

    requests: list[str]  # set per server: every path asked for

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.startswith("/stall/"):
            time.sleep(5)  # far past the tests' short timeout
            return
        if self.path.startswith("/cut/") or (self.path.startswith("/flaky/") and self.requests.count(self.path) == 1):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"It is a truth universally acknowledged" * 100)  # 3,800 of the promised 100,000
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.path = self.path.removeprefix("/flaky")
        super().do_GET()


@contextmanager
def serve(root: Path):
    """(url, the paths asked for) of a Handler serving root."""
    handler = type("Handler", (Handler,), {"requests": []})
    with helpers.serve(root, handler) as url:
        yield url, handler.requests


BOOKS = gutenberg_books()  # id -> the bytes the mirror serves


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory) -> Path:
    return write_mirror(tmp_path_factory.mktemp("mirror"), BOOKS)


@pytest.fixture
def mirror(mirror_root):
    """(url, list of requested paths): the books at cache/epub/<id>/pg<id>.txt."""
    with serve(mirror_root) as served:
        yield served


class Recorder(DownloadProgress):
    """What a download reports, kept: notes, and each book's last byte count."""

    def __init__(self):
        self.notes, self.received = [], {}

    def note(self, message):
        self.notes.append(message)

    def bytes(self, title, received, total):
        assert total is None or received <= total
        self.received[title] = (received, total)


def test_downloads_books_and_skips_those_present(tmp_path, mirror):
    url, requests = mirror
    progress = Recorder()
    paths = download_books([1342, 55], tmp_path / "data", mirror=url, progress=progress)
    assert paths == [tmp_path / "data" / "pg1342.txt", tmp_path / "data" / "pg55.txt"]
    for path, book_id in zip(paths, (1342, 55)):
        assert path.read_bytes() == BOOKS[book_id]
    assert requests == ["/cache/epub/1342/pg1342.txt", "/cache/epub/55/pg55.txt"]
    # The progress heard every byte of each book, and what was done.
    assert progress.received == {"Pride and Prejudice": (len(BOOKS[1342]),) * 2,
                                 "The Wonderful Wizard of Oz": (len(BOOKS[55]),) * 2}
    assert progress.notes[0] == f"Books from {url} into {tmp_path / 'data'}:"
    assert progress.notes[-1] == "Downloaded 2 book(s), skipped 0 already present."
    again = Recorder()
    download_books([1342, 55, 84], tmp_path / "data", mirror=url, progress=again)
    assert requests[2:] == ["/cache/epub/84/pg84.txt"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["pg1342.txt", "pg55.txt", "pg84.txt"]
    assert "pg1342.txt (Pride and Prejudice) is already there: skipped." in again.notes
    assert again.notes[-1] == "Downloaded 1 book(s), skipped 2 already present."


def test_404_names_the_address(tmp_path, mirror):
    url, requests = mirror
    with pytest.raises(UserError, match=rf"no book at {url}/cache/epub/999999/pg999999.txt \(HTTP 404"):
        download_books([999999], tmp_path, mirror=url)
    assert len(requests) == 1  # a missing book is not retried
    assert list(tmp_path.iterdir()) == []


def test_stalled_server_times_out_after_one_retry(tmp_path, mirror):
    url, requests = mirror
    started = time.monotonic()
    progress = Recorder()
    with pytest.raises(UserError, match=rf"Could not download {url}/stall/cache/epub/55/pg55.txt .*timed out.*--mirror"):
        download_books([55], tmp_path, mirror=url + "/stall", timeout=0.3, progress=progress)
    assert any(n.endswith("timed out: no answer within 0.3 s; trying once more.") for n in progress.notes)
    assert len(requests) == 2 and time.monotonic() - started < 4  # it did not wait for the server
    assert list(tmp_path.iterdir()) == []


def test_transfer_cut_off_leaves_no_partial_file(tmp_path, mirror):
    url, requests = mirror
    with pytest.raises(UserError, match=r"Could not download .*/cut/cache/epub/55/pg55.txt"):
        download_books([55], tmp_path, mirror=url + "/cut", timeout=5)
    assert len(requests) == 2
    assert list(tmp_path.iterdir()) == []  # neither the book nor a temporary file


def test_retry_recovers_from_one_broken_transfer(tmp_path, mirror):
    url, requests = mirror
    [path] = download_books([55], tmp_path, mirror=url + "/flaky", timeout=5)
    assert len(requests) == 2 and path.read_bytes() == BOOKS[55]


def test_offline_message_through_the_cli(tmp_path, run_hellogpt):
    offline = closed_port_url()
    result = run_hellogpt("--home", str(tmp_path), "data", "download", "55", "--timeout", "2",
                          env={"HELLOGPT_GUTENBERG_MIRROR": offline})
    assert result.returncode == 2, result.stderr
    assert f"Could not download {offline}/cache/epub/55/pg55.txt" in result.stderr
    assert "--mirror" in result.stderr and "copy plain-text .txt books into" in result.stderr
    assert "hellogpt data bundled" in result.stderr  # the way without a network
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "pg55.txt").exists()


def test_download_train_tokenizer_and_roundtrip_every_book(tmp_path, mirror, run_hellogpt):
    """The issue's acceptance path: the default eight books from a mirror into a fresh home, then a tokenizer."""
    from hellogpt.data.tokenizer import load_tokenizer

    url, _ = mirror
    result = run_hellogpt("--home", str(tmp_path), "data", "download", "--mirror", url)
    assert result.returncode == 0, result.stderr
    books = sorted((tmp_path / "data").glob("*.txt"))
    assert [p.name for p in books] == sorted(f"pg{i}.txt" for i in DEFAULT_BOOKS)
    assert all(p.read_bytes() == BOOKS[int(p.stem.removeprefix("pg"))] for p in books)

    result = run_hellogpt("--home", str(tmp_path), "tokenizer", "train", "--vocab-size", "1024")
    assert result.returncode == 0, result.stderr
    assert "Saved" in result.stdout
    tokenizer = load_tokenizer(tmp_path / "artifacts" / "tokenizer" / "tokenizer.json")
    raw = [p.read_bytes() for p in books]
    ids = tokenizer.encode_documents([r.decode() for r in raw])  # as on disk: BOM, header and footer too
    for path, data, book_ids in zip(books, raw, ids):
        assert tokenizer.decode(book_ids.tolist()).encode() == data, path.name
    assert sum(map(len, raw)) / sum(map(len, ids)) > 2  # and it compresses (2.7 bytes per token at 1024)
