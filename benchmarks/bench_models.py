"""What the benchmarks share: the model they measure and the books they read.

SEED_MODEL is the model the speed, memory and start-up budgets (issues 4 and 5) were set for: the seed's
default size, 5.2 M parameters. HelloGPT's defaults are now the smaller two-minute model (issue 6); these
benchmarks keep measuring the larger one, the harder case, so their recorded figures stay comparable.

The books: the eight shared ones in ../shared/corpus (beside the checkout), and the reference book, Pride and
Prejudice (pg1342.txt). Where ../shared/corpus is absent, the reference book is the copy bundled with
HelloGPT (hellogpt.data.books, the same bytes as the shared one), written to benchmarks/out/bundled/.
"""

from __future__ import annotations

from pathlib import Path

SEED_MODEL = dict(vocab_size=8000, max_seq_len=128, d_model=256, n_layers=4, n_heads=4, d_ffn=1024, dropout=0.1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"
REFERENCE_BOOK = "pg1342.txt"
BUNDLED_DIR = ROOT / "benchmarks" / "out" / "bundled"


def as_flags(settings: dict) -> list[str]:
    """`hellogpt train` flags for these settings."""
    return [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]


def reference_book(corpus: Path | None = None) -> Path:
    """Pride and Prejudice: corpus/pg1342.txt when a corpus folder is given (it must be there), else the
    shared one, else the bundled copy written to benchmarks/out/bundled/pg1342.txt."""
    if corpus is not None:
        book = Path(corpus) / REFERENCE_BOOK
        if not book.is_file():
            raise SystemExit(f"There is no {REFERENCE_BOOK} (Pride and Prejudice) in {corpus}.")
        return book
    shared = SHARED_CORPUS / REFERENCE_BOOK
    if shared.is_file():
        return shared
    from hellogpt.data.books import bundled_text

    book = BUNDLED_DIR / REFERENCE_BOOK
    text = bundled_text(1342)
    if not book.is_file() or book.read_bytes() != text:
        book.parent.mkdir(parents=True, exist_ok=True)
        scratch = book.with_suffix(".tmp")
        scratch.write_bytes(text)
        scratch.replace(book)
    return book


def shared_books(corpus: Path | None = None, why: str = "this benchmark") -> list[Path]:
    """The .txt books of the corpus folder (default: ../shared/corpus), or exit saying what is missing."""
    folder = Path(corpus) if corpus is not None else SHARED_CORPUS
    books = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not books:
        raise SystemExit(
            f"No books in {folder}: {why} needs the eight shared books (pg1342, pg105, pg11, pg121, pg1661, "
            f"pg55, pg74, pg84 .txt from Project Gutenberg) in {SHARED_CORPUS}, or a folder of .txt books given "
            "with --corpus. (`hellogpt --home DIR data download` fetches the eight; `hellogpt --home DIR data "
            "bundled` writes the two that come with HelloGPT.)")
    return books
