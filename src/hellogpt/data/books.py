"""Books in: find the .txt files, read and clean them, split each into train and validation.

Two books come inside the package (bundled/: Pride and Prejudice and The Wonderful Wizard
of Oz, gzip-compressed), so that a machine with no network has something to learn from.

Cleaning is deliberately small, so that what the model learns is the book itself:
a Project Gutenberg header and footer go (only when their `*** START OF` /
`*** END OF` marker lines are present), a byte order mark goes, and Windows line
endings become "\\n". Nothing else in the text changes.
"""

from __future__ import annotations

import gzip
import re
from importlib import resources
from pathlib import Path

from hellogpt.core.errors import UserError
from hellogpt.core.fileio import atomic_path
from hellogpt.core.paths import Home

BOM = "\ufeff"
# A marker is a line of its own: "*** START OF THE PROJECT GUTENBERG EBOOK PRIDE AND PREJUDICE ***".
_START = re.compile(r"^\*\*\* ?START OF.*$\n?", re.MULTILINE)
_END = re.compile(r"^\*\*\* ?END OF.*$", re.MULTILINE)
_HOW_TO_ADD = ("Run `hellogpt data bundled` for the two books that come with HelloGPT, `hellogpt data download` "
               "for eight from Project Gutenberg, or copy plain-text .txt books into it")
BUNDLED_BOOKS = {1342: "Pride and Prejudice", 55: "The Wonderful Wizard of Oz"}


def data_path(home: Home, args_data: str | Path | None) -> Path:
    """The books to use: `--data PATH` (a folder or one file) if given, else <home>/data."""
    return Path(args_data).expanduser().resolve() if args_data else home.data_dir


def bundled_text(book_id: int) -> bytes:
    """A bundled book's bytes, exactly as Project Gutenberg serves them."""
    return gzip.decompress(resources.files("hellogpt.data").joinpath(f"bundled/pg{book_id}.txt.gz").read_bytes())


def book_path(data_dir: Path, book_id: int) -> Path:
    """Where a Project Gutenberg book lives in a folder of books, bundled or downloaded: pg<id>.txt."""
    return Path(data_dir) / f"pg{book_id}.txt"


def add_bundled_books(data_dir: Path) -> list[Path]:
    """Write the bundled books into `data_dir` as pg<id>.txt (as a download names them); books already
    there are left as they are. Returns the paths of all of them."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        raise UserError(f"{data_dir} is a file, but books go into a folder. Give --data a folder (or leave it "
                        "out to use data/).")
    paths = []
    for book_id in BUNDLED_BOOKS:
        path = book_path(data_dir, book_id)
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_bytes(bundled_text(book_id))
        paths.append(path)
    return paths


def find_books(path: Path) -> list[Path]:
    """The .txt books at `path`: the file itself, or the .txt files directly in the folder, sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"The book folder {path} does not exist. {_HOW_TO_ADD} (create the folder first), "
                        "or point --data at a folder or a .txt file that exists.")
    books = sorted(p for p in path.glob("*.txt") if p.is_file())
    if not books:
        raise UserError(f"There are no .txt files in {path}. {_HOW_TO_ADD}, "
                        "or point --data at another folder or a single .txt file.")
    return books


def clean(text: str) -> str:
    """Strip a byte order mark, turn CRLF into LF, cut the Gutenberg header and footer when marked. A file
    of several Gutenberg books (one START/END pair each) keeps every book's text, one after the other."""
    text = text.removeprefix(BOM).replace("\r\n", "\n")
    starts = list(_START.finditer(text))
    if not starts:
        end = _END.search(text)
        return text[:end.start()] if end else text
    bodies = []
    for i, start in enumerate(starts):
        stop = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        end = _END.search(text, start.end(), stop)
        bodies.append(text[start.end():end.start() if end else stop])
    return "".join(bodies)


def decode_utf8(raw: bytes, path: Path) -> str:
    """The text of a book's bytes, or a UserError that names the file and the first bad byte."""
    if not raw:
        raise UserError(f"The book {path} is empty. Put text in it or remove it from the folder.")
    nul = raw.find(b"\x00")
    if nul != -1:
        raise UserError(f"The file {path} looks binary, not text (a zero byte at byte offset {nul}). "
                        "Books must be plain UTF-8 text: remove it from the folder or convert it to .txt.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"The file {path} is not valid UTF-8 text (bad byte 0x{raw[e.start]:02x} at byte offset "
                        f"{e.start}). Save it as UTF-8 (for example `iconv -f latin1 -t utf-8 in.txt > out.txt`) "
                        "or remove it from the folder.") from None


def read_book(path: Path) -> str:
    """A book's cleaned text (see the module docstring)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"Cannot read the book {path} ({e.strerror}). Check that it exists and is readable.")
    text = clean(decode_utf8(raw, path))
    if not text.strip():
        raise UserError(f"The book {path} has no text once the Project Gutenberg header and footer are removed. "
                        "Put text in it or remove it from the folder.")
    return text


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction} is out of range: give a fraction from 0 (no validation) "
                        "up to, but not including, 1 (for example 0.1 for the last 10%).")


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val): the first characters train, the last `val_fraction` of them validate."""
    check_val_fraction(val_fraction)
    cut = len(text) - round(len(text) * val_fraction)
    return text[:cut], text[cut:]
