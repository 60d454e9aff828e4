"""What a model needs before it trains, asked for one step at a time: books, then a tokenizer.
The console application and `hellogpt train` share these steps (questions.py asks)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hellogpt.app.progress import DownloadBars
from hellogpt.app.questions import Declined, ask, choose
from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.core.settings import Config, describe_vocab_size
from hellogpt.data.books import BUNDLED_BOOKS, add_bundled_books, data_path, find_books
from hellogpt.data.gutenberg import DEFAULT_BOOKS, download_books
from hellogpt.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer


def ensure_books(home: Home, data: str | None, yes: bool, mirror: str | None = None) -> Path:
    """The books to learn from. When data/ has none: the two bundled books (the default), the eight
    from Project Gutenberg, or the user's own. A failed download says why and offers the bundled
    books or another try."""
    path = data_path(home, data)
    try:
        books = find_books(path)
    except UserError:
        if data:  # the user pointed somewhere specific: filling another folder would not help
            raise
        books = []
    if books:
        print(f"Books: {len(books)} in {path}.")
        return path
    bundled = " and ".join(BUNDLED_BOOKS.values())
    print(f"There are no books in {path} yet. HelloGPT learns from plain-text books:")
    options = [f"the two books that come with HelloGPT: {bundled} (0.9 MB, no network needed)",
               f"download {len(DEFAULT_BOOKS)} public-domain books from Project Gutenberg (about 3.4 MB): "
               + ", ".join(DEFAULT_BOOKS.values()),
               f"your own: copy plain-text .txt files into {path}, then run me again"]
    while True:
        choice = choose("Which books?", options, yes)
        if choice == 0:
            books = add_bundled_books(path)
        elif choice == 2:
            raise Declined(f"Put some .txt books into {path} (one file per book, UTF-8), then run me again.")
        else:
            try:
                with DownloadBars(Console(soft_wrap=True)) as bars:
                    books = download_books(list(DEFAULT_BOOKS), path, mirror=mirror, progress=bars)
            except UserError as e:
                print(f"The download failed: {e}")
                options[1] = "try the download again"
                continue
        print(f"Books: {len(books)} in {path}.")
        return path


def ensure_tokenizer(home: Home, config: Config, books: Path, yes: bool) -> Tokenizer:
    """The home's byte-level BPE tokenizer, trained on the books if there is none and the user agrees."""
    path = home.tokenizer_path
    if path.is_file():
        return load_tokenizer(path)
    print(f"\nThere is no tokenizer yet ({path}). A tokenizer cuts text into the pieces the model reads and "
          f"writes; HelloGPT learns {describe_vocab_size(config.vocab_size)} (bytes, then frequent merges of "
          "bytes) from the training part of the books.")
    if not ask("Train the tokenizer now?", yes):
        raise Declined("Train it with `hellogpt tokenizer train`, then run me again.")
    return train_tokenizer_shown(home, books, config.vocab_size, config.val_fraction)


def train_tokenizer_shown(home: Home, books: Path, vocab_size: int, val_fraction: float) -> Tokenizer:
    """train_tokenizer with its messages printed (and the library's bars where someone can watch them)."""
    console = Console(soft_wrap=True)
    return train_tokenizer(home, books, vocab_size, val_fraction, show_progress=console.is_terminal,
                           note=lambda message: console.print(message, highlight=False, markup=False))
