"""Helpers the tests share (conftest.py holds the shared fixtures): the bundled books' text, made-up books,
a local Gutenberg mirror, an address nobody answers at."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hellogpt.data.books import BUNDLED_BOOKS, bundled_text
from hellogpt.data.gutenberg import DEFAULT_BOOKS


def bundled(book_id: int) -> str:
    """A bundled book's text as Project Gutenberg serves it (header and footer markers included)."""
    return bundled_text(book_id).decode("utf-8")


def made_up_book(book_id: int, title: str) -> bytes:
    """A small book in one of the shapes Gutenberg serves (for mirror ids other than the bundled two): about
    30 KB of the bundled books' text under its own header, with the START and END marker lines, Windows line
    endings and, for even ids, a byte order mark; ids divisible by 3 come without header or markers."""
    pride, oz = bundled(1342), bundled(55)
    start = (book_id * 7919) % 400_000
    body = pride[start:start + 20_000] + "\n\n" + oz[start % 150_000:start % 150_000 + 10_000]
    if book_id % 3 == 0:
        text = body  # plain: no header, no markers
    else:
        upper = title.upper()
        text = (f"The Project Gutenberg eBook of {title}\n\nRelease date: 1998\n\n"
                f"*** START OF THE PROJECT GUTENBERG EBOOK {upper} ***\n{body}\n"
                f"*** END OF THE PROJECT GUTENBERG EBOOK {upper} ***\n\nUpdated editions will replace the previous one.\n")
    text = text.replace("\n", "\r\n")
    return ("\ufeff" + text if book_id % 2 == 0 else text).encode("utf-8")


def gutenberg_books() -> dict[int, bytes]:
    """The bytes a mirror serves for each of the default download's eight ids: the bundled books as they
    are, made-up ones for the other six."""
    return {book_id: bundled_text(book_id) if book_id in BUNDLED_BOOKS else made_up_book(book_id, title)
            for book_id, title in DEFAULT_BOOKS.items()}


def write_mirror(root: Path, books: dict[int, bytes]) -> Path:
    """Books laid out as a Gutenberg mirror: root/cache/epub/<id>/pg<id>.txt."""
    for book_id, data in books.items():
        folder = root / "cache" / "epub" / str(book_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"pg{book_id}.txt").write_bytes(data)
    return root


def closed_port_url() -> str:
    """An http:// address on the loopback interface that nobody listens on: a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@contextmanager
def serve(root: Path, handler: type[SimpleHTTPRequestHandler] = QuietHandler):
    """Serve the files under `root` on a free loopback port while the block runs; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
