"""Tokenized books and the batches cut from them.

Every book is split by characters (first part train, last `val_fraction` validation)
and each part is tokenized on its own, so no validation text ever reaches training.
The ids of each split are one flat array, <|endoftext|> after every document:

    train.bin   book1_train EOT book2_train EOT ...     (uint16, or uint32 for a vocabulary > 65,536)
    val.bin     book1_val   EOT book2_val   EOT ...

They are cached under artifacts/tokens/<key>/, the key a hash of the tokenizer file,
the books' contents and the split, so the cache rebuilds itself when any of them
changes, and are read back as memory maps: a book collection larger than RAM works.
A training batch is B windows of T+1 tokens sliced out of the map (inputs: the first T,
targets: the last T), picked epoch by epoch in a random order (EpochSampler). Windows are
never materialised up front.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from hellogpt.core.errors import UserError
from hellogpt.core.fileio import publish_folder, remove_stale_temporaries, temporary_folder
from hellogpt.core.paths import Home
from hellogpt.data.books import check_val_fraction, find_books, read_book, split_text
from hellogpt.data.tokenizer import Tokenizer

CACHE_FORMAT = 1  # bump when the layout of the cache changes, so old caches are not misread
SPLITS = ("train", "val")


@dataclass
class BookStats:
    name: str
    chars: int
    bytes: int  # UTF-8 bytes of the cleaned text
    train_chars: int
    val_chars: int
    train_bytes: int
    val_bytes: int
    train_tokens: int  # without the <|endoftext|> that follows the document
    val_tokens: int


@dataclass
class TokenData:
    train: np.ndarray  # (N_train,) uint16/uint32 memmap
    val: np.ndarray  # (N_val,)
    fingerprint: str  # the books (names and cleaned contents)
    tokenizer_fingerprint: str
    val_fraction: float
    books: list[BookStats]
    path: Path  # the cache folder

    def split(self, name: str) -> np.ndarray:
        return {"train": self.train, "val": self.val}[name]

    def text_bytes(self, name: str) -> int:
        """UTF-8 bytes of text behind a split (for bits per byte)."""
        return sum(getattr(b, f"{name}_bytes") for b in self.books)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def fingerprint_books(books: list[Path], texts: list[str]) -> str:
    """A hash of the books' names and cleaned texts: it changes when any book is added, removed or edited."""
    h = hashlib.sha256()
    for path, text in zip(books, texts):
        h.update(path.name.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
    return h.hexdigest()[:16]


def prepare_tokens(home: Home, data_path: Path, tokenizer: Tokenizer, val_fraction: float,
                   on_progress: Callable[[int, int], None] | None = None) -> TokenData:
    """The books at `data_path` as token memmaps, from the cache or tokenized now (and cached).
    on_progress(bytes done, bytes in all) follows the tokenizing, when there is any."""
    check_val_fraction(val_fraction)
    books = find_books(data_path)
    texts = [read_book(p) for p in books]
    fingerprint = fingerprint_books(books, texts)
    key = hashlib.sha256(f"{CACHE_FORMAT}:{tokenizer.fingerprint}:{fingerprint}:{val_fraction!r}".encode())
    cache = home.tokens_dir / key.hexdigest()[:16]
    if not (cache / "meta.json").is_file():
        remove_stale_temporaries(cache, any_name=True)  # caches of other books whose build was killed
        _build_cache(cache, books, texts, tokenizer, val_fraction, fingerprint, on_progress or (lambda done, total: None))
    return _load_cache(cache)


def _build_cache(cache: Path, books: list[Path], texts: list[str], tokenizer: Tokenizer, val_fraction: float,
                 fingerprint: str, on_progress: Callable[[int, int], None]) -> None:
    """Tokenize into a temporary folder and rename it into place: the cache is complete or absent."""
    dtype = token_dtype(tokenizer.vocab_size)
    eot = np.array([tokenizer.eot_id], dtype=dtype).tobytes()
    stats, done, total = [], 0, sum(len(t.encode()) for t in texts)
    with temporary_folder(cache) as tmp:
        with open(tmp / "train.bin", "wb") as train_file, open(tmp / "val.bin", "wb") as val_file:
            for path, text in zip(books, texts):
                train, val = split_text(text, val_fraction)
                train_ids, val_ids = tokenizer.encode_documents([train, val], dtype=dtype)
                for fh, part, part_ids in ((train_file, train, train_ids), (val_file, val, val_ids)):
                    if part:  # an empty part (val_fraction 0) is no document: no <|endoftext|> either
                        fh.write(part_ids.tobytes() + eot)
                stats.append(BookStats(
                    name=path.name, chars=len(text), bytes=len(text.encode()),
                    train_chars=len(train), val_chars=len(val),
                    train_bytes=len(train.encode()), val_bytes=len(val.encode()),
                    train_tokens=len(train_ids), val_tokens=len(val_ids)))
                done += stats[-1].bytes
                on_progress(done, total)
        meta = {"format": CACHE_FORMAT, "dtype": dtype.name, "fingerprint": fingerprint,
                "tokenizer_fingerprint": tokenizer.fingerprint, "val_fraction": val_fraction,
                "books": [asdict(s) for s in stats]}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        publish_folder(tmp, [cache])  # None: another process built the same cache first, which is as good


def _open_split(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # an empty file cannot be memory-mapped
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _load_cache(cache: Path) -> TokenData:
    meta = json.loads((cache / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    return TokenData(
        train=_open_split(cache / "train.bin", dtype),
        val=_open_split(cache / "val.bin", dtype),
        fingerprint=meta["fingerprint"],
        tokenizer_fingerprint=meta["tokenizer_fingerprint"],
        val_fraction=meta["val_fraction"],
        books=[BookStats(**b) for b in meta["books"]],
        path=cache,
    )


def num_windows(tokens: np.ndarray, seq_len: int) -> int:
    """How many non-overlapping training samples (windows of seq_len targets) a split holds."""
    return max(0, (len(tokens) - 1) // seq_len)


def _check_length(tokens: np.ndarray, seq_len: int) -> None:
    if len(tokens) < seq_len + 1:
        raise UserError(f"A split holds only {len(tokens):,} tokens, but one training window needs "
                        f"max_seq_len + 1 = {seq_len + 1:,}. Add more text, lower --max-seq-len, "
                        "or raise --val-fraction if it is the validation split.")


class EpochSampler:
    """Where training windows start, epoch by epoch.

    Each epoch cuts the training tokens into back-to-back windows of seq_len + 1 tokens from a random
    offset (0 to seq_len - 1) and visits all of them once, in a random order; the next epoch draws a new
    offset and order. Every token is trained on once per epoch, at a different place in its window each
    time. (Windows drawn independently at random positions, as nanoGPT does, see some passages several
    times and miss others: on the two-minute task that cost 0.013 to 0.018 bits per byte.) The same seed
    gives the same windows; state_dict() holds what resuming needs.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        _check_length(tokens, seq_len)
        self.n_tokens, self.seq_len = len(tokens), seq_len
        self.generator = torch.Generator().manual_seed(seed)
        self._new_epoch()

    def _new_epoch(self) -> None:
        """Draw the next epoch. Only this draws from the generator, so its state before the draw
        (epoch_rng) and the cursor are all the sampler's state."""
        self.epoch_rng = self.generator.get_state()
        last = self.n_tokens - self.seq_len - 1  # the last position a window can start at
        offset = int(torch.randint(min(self.seq_len, last + 1), (1,), generator=self.generator))
        starts = torch.arange(offset, last + 1, self.seq_len)
        self.order = starts[torch.randperm(len(starts), generator=self.generator)]  # window starts, in visiting order
        self.cursor = 0  # how many of them have been used

    def next(self, count: int) -> torch.Tensor:
        """The starts of the next `count` windows (count,), running on into the next epoch when needed."""
        parts = [torch.empty(0, dtype=torch.long)]
        while count > 0:
            if self.cursor == len(self.order):
                self._new_epoch()
            take = min(count, len(self.order) - self.cursor)
            parts.append(self.order[self.cursor : self.cursor + take])
            self.cursor += take
            count -= take
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"epoch_rng": self.epoch_rng, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where state_dict() was taken: the same epoch, order and place in it."""
        self.generator.set_state(state["epoch_rng"])
        self._new_epoch()  # the same offset and order again, and the generator where it stood
        self.cursor = state["cursor"]


def windows(tokens: np.ndarray, starts: torch.Tensor, seq_len: int,
            device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), int64 (B, T): the windows of seq_len + 1 tokens starting at `starts` (B,), as inputs and
    next-token targets. One vectorised gather, no per-token Python."""
    idx = starts[:, None] + torch.arange(seq_len + 1)  # (B, T+1)
    window = torch.from_numpy(tokens[idx.numpy()].astype(np.int64))  # (B, T+1)
    x = window[:, :-1].contiguous()  # (B, T)
    y = window[:, 1:].contiguous()  # (B, T): each position's next token
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def sequential_batches(tokens: np.ndarray, batch_size: int, seq_len: int,
                       device="cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every non-overlapping window of a split once, in order (for evaluation): `num_windows` windows."""
    _check_length(tokens, seq_len)
    n = num_windows(tokens, seq_len)
    for first in range(0, n, batch_size):
        starts = torch.arange(first, min(first + batch_size, n)) * seq_len  # (B,)
        yield windows(tokens, starts, seq_len, device)


def text_stats(path: Path, val_fraction: float) -> BookStats:
    """A book's size and split, before any tokenizer (its token counts are 0)."""
    text = read_book(path)
    train, val = split_text(text, val_fraction)
    return BookStats(path.name, len(text), len(text.encode()), len(train), len(val),
                     len(train.encode()), len(val.encode()), 0, 0)


def total_stats(books: list[BookStats]) -> BookStats:
    """The sums of the books' numbers, as a row named "total"."""
    sums = {f: sum(getattr(b, f) for b in books) for f in asdict(books[0]) if f != "name"}
    return BookStats(name="total", **sums)
