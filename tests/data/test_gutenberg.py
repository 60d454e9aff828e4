"""Downloading books, against a local HTTP server that serves ../shared/corpus in Gutenberg's layout."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hellogpt.data.gutenberg import DEFAULT_BOOKS, download_books
from hellogpt.core.errors import UserError

pytestmark = pytest.mark.integration


class Handler(SimpleHTTPRequestHandler):
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

    def log_message(self, *args):  # keep the test output clean
        pass


@contextmanager
def serve(root: Path):
    handler = type("Handler", (Handler,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror(tmp_path_factory, corpus_dir):
    """(url, list of requested paths): the shared books at cache/epub/<id>/pg<id>.txt."""
    root = tmp_path_factory.mktemp("mirror")
    for book in corpus_dir.glob("pg*.txt"):
        book_id = book.stem.removeprefix("pg")
        (root / "cache" / "epub" / book_id).mkdir(parents=True)
        (root / "cache" / "epub" / book_id / book.name).symlink_to(book)
    with serve(root) as served:
        yield served


def test_downloads_books_and_skips_those_present(tmp_path, mirror, corpus_dir):
    url, requests = mirror
    paths = download_books([11, 55], tmp_path / "data", mirror=url, show_progress=False)
    assert paths == [tmp_path / "data" / "pg11.txt", tmp_path / "data" / "pg55.txt"]
    for path in paths:
        assert path.read_bytes() == (corpus_dir / path.name).read_bytes()
    assert requests == ["/cache/epub/11/pg11.txt", "/cache/epub/55/pg55.txt"]
    download_books([11, 55, 84], tmp_path / "data", mirror=url, show_progress=False)
    assert requests[2:] == ["/cache/epub/84/pg84.txt"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["pg11.txt", "pg55.txt", "pg84.txt"]


def test_404_names_the_address(tmp_path, mirror):
    url, requests = mirror
    with pytest.raises(UserError, match=rf"no book at {url}/cache/epub/999999/pg999999.txt \(HTTP 404"):
        download_books([999999], tmp_path, mirror=url, show_progress=False)
    assert len(requests) == 1  # a missing book is not retried
    assert list(tmp_path.iterdir()) == []


def test_stalled_server_times_out_after_one_retry(tmp_path, mirror):
    url, requests = mirror
    started = time.monotonic()
    with pytest.raises(UserError, match=rf"Could not download {url}/stall/cache/epub/11/pg11.txt .*timed out.*--mirror"):
        download_books([11], tmp_path, mirror=url + "/stall", timeout=0.3, show_progress=False)
    assert len(requests) == 2 and time.monotonic() - started < 4  # it did not wait for the server
    assert list(tmp_path.iterdir()) == []


def test_transfer_cut_off_leaves_no_partial_file(tmp_path, mirror):
    url, requests = mirror
    with pytest.raises(UserError, match=r"Could not download .*/cut/cache/epub/11/pg11.txt"):
        download_books([11], tmp_path, mirror=url + "/cut", timeout=5, show_progress=False)
    assert len(requests) == 2
    assert list(tmp_path.iterdir()) == []  # neither the book nor a temporary file


def test_retry_recovers_from_one_broken_transfer(tmp_path, mirror, corpus_dir):
    url, requests = mirror
    [path] = download_books([11], tmp_path, mirror=url + "/flaky", timeout=5, show_progress=False)
    assert len(requests) == 2 and path.read_bytes() == (corpus_dir / "pg11.txt").read_bytes()


def test_offline_message_through_the_cli(tmp_path, run_hellogpt):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_hellogpt("--home", str(tmp_path), "data", "download", "11", "--timeout", "2",
                      env={"HELLOGPT_GUTENBERG_MIRROR": f"http://127.0.0.1:{port}"})
    assert result.returncode == 2, result.stderr
    assert f"Could not download http://127.0.0.1:{port}/cache/epub/11/pg11.txt" in result.stderr
    assert "--mirror" in result.stderr and "copy plain-text .txt books into" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "pg11.txt").exists()


def test_download_train_tokenizer_and_roundtrip_every_book(tmp_path, mirror, corpus_dir, run_hellogpt):
    """The issue's acceptance path: the default eight books from a mirror into a fresh home, then a tokenizer."""
    from hellogpt.data.tokenizer import load_tokenizer

    url, _ = mirror
    result = run_hellogpt("--home", str(tmp_path), "data", "download", "--mirror", url)
    assert result.returncode == 0, result.stderr
    books = sorted((tmp_path / "data").glob("*.txt"))
    assert [p.name for p in books] == sorted(f"pg{i}.txt" for i in DEFAULT_BOOKS)
    assert all(p.read_bytes() == (corpus_dir / p.name).read_bytes() for p in books)

    result = run_hellogpt("--home", str(tmp_path), "tokenizer", "train", "--vocab-size", "1024")
    assert result.returncode == 0, result.stderr
    assert "Saved" in result.stdout
    tokenizer = load_tokenizer(tmp_path / "artifacts" / "tokenizer" / "tokenizer.json")
    raw = [p.read_bytes() for p in books]
    ids = tokenizer.encode_documents([r.decode() for r in raw])  # as on disk: BOM, header and footer too
    for path, data, book_ids in zip(books, raw, ids):
        assert tokenizer.decode(book_ids.tolist()).encode() == data, path.name
    assert sum(map(len, raw)) / sum(map(len, ids)) > 2  # and it compresses (2.7 bytes per token at 1024)
