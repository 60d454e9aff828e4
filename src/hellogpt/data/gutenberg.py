"""`hellogpt data download`: public-domain books from Project Gutenberg into data/.

A book's plain text lives at <mirror>/cache/epub/<id>/pg<id>.txt, the mirror being
https://www.gutenberg.org unless `--mirror URL` or $HELLOGPT_GUTENBERG_MIRROR says
otherwise. Each book is streamed into a temporary file and renamed into place only
when every byte has arrived, so a failed or interrupted download leaves nothing
behind. Books already in the folder are skipped.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable

from hellogpt import __version__
from hellogpt.core.errors import UserError
from hellogpt.core.fileio import atomic_path
from hellogpt.data.books import book_path

GUTENBERG = "https://www.gutenberg.org"
MIRROR_ENV = "HELLOGPT_GUTENBERG_MIRROR"
DEFAULT_BOOKS = {
    1342: "Pride and Prejudice",
    55: "The Wonderful Wizard of Oz",
    11: "Alice's Adventures in Wonderland",
    84: "Frankenstein",
    1661: "The Adventures of Sherlock Holmes",
    105: "Persuasion",
    121: "Northanger Abbey",
    74: "The Adventures of Tom Sawyer",
}
CHUNK = 1 << 16
ATTEMPTS = 2  # one retry: enough for a dropped connection, not so many that offline takes forever


class TransferError(Exception):
    """A download that may succeed if tried again (timeout, dropped connection, server error)."""


def book_url(mirror: str, book_id: int) -> str:
    return f"{mirror.rstrip('/')}/cache/epub/{book_id}/pg{book_id}.txt"


class DownloadProgress:
    """What a download reports: `note` a message, `bytes` each book's progress (total None when the
    server does not say). This one discards both; the application passes its own."""

    def note(self, message: str) -> None:
        pass

    def bytes(self, title: str, received: int, total: int | None) -> None:
        pass


def mirror_or_default(mirror: str | None) -> str:
    return mirror or os.environ.get(MIRROR_ENV) or GUTENBERG


def download_books(ids: list[int], data_dir: Path, mirror: str | None = None, timeout: float = 30,
                   progress: DownloadProgress | None = None) -> list[Path]:
    """Download the books with these Gutenberg ids into `data_dir` (skipping those present); their paths."""
    mirror, progress = mirror_or_default(mirror), progress or DownloadProgress()
    bad = [i for i in ids if i <= 0]
    if bad:
        raise UserError(f"Book id {bad[0]} is not a Project Gutenberg id: ids are positive numbers, "
                        "as in https://www.gutenberg.org/ebooks/1342 (1342 is Pride and Prejudice).")
    if timeout <= 0:
        raise UserError(f"--timeout {timeout} must be a positive number of seconds.")
    data_dir = Path(data_dir)
    if data_dir.is_file():
        raise UserError(f"{data_dir} is a file, but books are downloaded into a folder. "
                        "Give --data a folder (or leave it out to use data/).")
    paths, fetched = [], 0
    progress.note(f"Books from {mirror} into {data_dir}:")
    for book_id in ids:
        path = book_path(data_dir, book_id)
        paths.append(path)
        title = DEFAULT_BOOKS.get(book_id, f"book {book_id}")
        if path.is_file():
            progress.note(f"{path.name} ({title}) is already there: skipped.")
            continue
        _download(book_url(mirror, book_id), path, timeout, progress, title, data_dir)
        fetched += 1
    progress.note(f"Downloaded {fetched} book(s), skipped {len(ids) - fetched} already present.")
    return paths


def _download(url: str, path: Path, timeout: float, progress: DownloadProgress, title: str, data_dir: Path) -> None:
    """Fetch `url` into `path`, trying twice; a UserError that names the address if it cannot be done."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _fetch(url, path, timeout, lambda received, total: progress.bytes(title, received, total))
        except TransferError as e:
            failure = e
            if attempt < ATTEMPTS:
                progress.note(f"{url}: {e}; trying once more.")
    raise UserError(f"Could not download {url} ({failure}). If you are offline or that server is unreachable, "
                    f"use `--mirror URL` (or set {MIRROR_ENV}) for a Gutenberg mirror with the "
                    f"cache/epub/<id>/pg<id>.txt layout, `hellogpt data bundled` for the two books that come with "
                    f"HelloGPT, or copy plain-text .txt books into {data_dir} yourself.")


def _fetch(url: str, path: Path, timeout: float, on_bytes: Callable[[int, int | None], None]) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": f"HelloGPT/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, atomic_path(path) as tmp:
            length = response.headers.get("Content-Length")
            expected = int(length) if length else None
            received = 0
            with open(tmp, "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    on_bytes(received, expected)
            if expected is not None and received != expected:
                raise TransferError(f"the transfer stopped after {received:,} of {expected:,} bytes")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise UserError(f"There is no book at {url} (HTTP 404 Not Found). Check the Gutenberg id "
                            "(https://www.gutenberg.org/ebooks/<id> shows the book) and, with --mirror, "
                            "that the mirror has the cache/epub/<id>/pg<id>.txt layout.") from None
        raise TransferError(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            raise TransferError(f"timed out: no answer within {timeout:g} s") from None
        raise TransferError(str(reason)) from None
    except (HTTPException, ConnectionError) as e:
        raise TransferError(f"the connection broke off ({type(e).__name__})") from None
