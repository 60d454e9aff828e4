"""Byte-level BPE tokenizer (Hugging Face `tokenizers`), as GPT-2 has.

Text is first turned into bytes, so every string is representable and
`decode(encode(s)) == s` holds for any valid Unicode. Merges are learned from the
books. `<|endoftext|>` separates documents. Saved as artifacts/tokenizer/tokenizer.json.

One step comes before the bytes: after every newline and every opening quotation
mark (`“`) the tokenizer writes a space, and decoding takes that space out again.
Books are hard-wrapped, so a newline mostly marks where a printed line ended, and
the word after it, as the first word of a quotation, would otherwise be another
token ("word") than the same word anywhere else (" word"): two embeddings for one
word, the second learned from a fraction of its examples. With the space, a word is
one token wherever it falls. On the two-minute model this is worth about 0.04 bits
per byte (benchmarks/RESULTS.md). Bits per byte count the text's own bytes
(`text_byte_counts`), never these spaces.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from hellogpt.core.errors import UserError
from hellogpt.core.fileio import atomic_path
from hellogpt.core.paths import Home
from hellogpt.core.settings import MIN_VOCAB_SIZE, vocab_size_for
from hellogpt.core.text import valid_text
from hellogpt.data.books import find_books, read_book, split_text

EOT = "<|endoftext|>"
SPACED = ("\n", "\u201c")  # newline and the opening quotation mark: a space goes after each (see above)


class Tokenizer:
    """A thin wrapper that names what HelloGPT needs: encode, decode, the end-of-text id."""

    def __init__(self, hf: HFTokenizer, fingerprint: str):
        self.hf = hf
        self.fingerprint = fingerprint  # sha256 of tokenizer.json: checkpoints remember which tokenizer they need
        self.eot_id = hf.token_to_id(EOT)
        self.vocab_size = hf.get_vocab_size()
        # The characters this tokenizer writes a space after. Tokenizers saved before that step (and GPT-2's)
        # have none: they stay exactly as they were.
        self.spaced = _spaced_characters(json.loads(hf.to_str())["normalizer"])

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(valid_text(text), add_special_tokens=False).ids

    def encode_prompt(self, text: str) -> list[int]:
        """The ids of a prompt to continue. A prompt that ends in a spaced character would end in the space
        written after it, where training text has that space on the next word (" word"): it is left out
        here, and the stream of the continuation leaves it out of the first word (generation.generator.TextStream)."""
        ids = self.encode(text)
        if ids and text.endswith(self.spaced):
            last = self.hf.id_to_token(ids[-1])  # byte-level symbols, ending in the written space "Ġ"
            ids = ids[:-1] + [t.id for t in self.hf.model.tokenize(last[:-1])] if last[:-1] else ids[:-1]
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # The "fast" variant skips computing character offsets, which HelloGPT never uses.
        return [e.ids for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def encode_documents(self, texts: list[str], dtype=np.uint32) -> list[np.ndarray]:
        """Each text's ids, exactly as `encode` gives them, computed in parallel over pieces of all texts."""
        pieces = [split_for_encoding(text) for text in texts]
        ids = iter(self.encode_batch([p for text_pieces in pieces for p in text_pieces]))
        return [np.concatenate([np.asarray(next(ids), dtype=dtype) for _ in text_pieces]) for text_pieces in pieces]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (a token may hold part of a UTF-8 character), including the
        spaces the tokenizer writes after newlines and opening quotation marks (see the module docstring)."""
        return self._byte_table[token_id]

    @cached_property
    def _byte_table(self) -> list[bytes]:
        return [bytes(_BYTE_DECODER[ch] for ch in self.hf.id_to_token(i)) if i != self.eot_id else EOT.encode()
                for i in range(self.vocab_size)]

    def text_byte_counts(self, ids) -> np.ndarray:
        """(len(ids),) how many UTF-8 bytes of text each token of a token stream stands for: its bytes, less
        the spaces written in it. Which space was written depends on what came before (the spaced character
        may end the previous token, or be split across tokens), so this reads the whole stream at once."""
        pieces = [self.token_bytes(int(i)) for i in ids]
        counts = np.array([len(piece) for piece in pieces], dtype=np.int64)
        data, ends = b"".join(pieces), np.cumsum(counts)  # ends[k]: the byte offset where token k ends
        for ch in self.spaced:
            pattern = ch.encode()
            at = data.find(pattern)
            while at != -1:
                written = at + len(pattern)
                if data[written:written + 1] == b" ":  # as the decoder: a space right after it, if any
                    counts[np.searchsorted(ends, written, side="right")] -= 1
                at = data.find(pattern, written)
        return counts


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-printable-character table, inverted: which byte each symbol means."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTE_DECODER = _byte_decoder()


def split_for_encoding(text: str, size: int = 1 << 16) -> list[str]:
    """Cut a long text into pieces of about `size` characters that tokenize exactly as the whole does.

    The cuts fall only just before a "\n" that has non-whitespace on both sides. The
    byte-level pre-tokenizer always splits there (no pre-token holds "\n" next to a
    non-space), and BPE merges never cross pre-tokens, so the pieces' ids, joined, are
    the text's ids. (Just after the "\n" would not do: the space that the newline brings
    would end one piece instead of starting the next piece's word.) Many pieces keep
    every core busy on a single long book.
    """
    pieces, start = [], 0
    while len(text) - start > size:
        cut = _next_safe_cut(text, start + size)
        if cut == -1:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _next_safe_cut(text: str, i: int) -> int:
    """The first index >= i of a "\n" between two non-whitespace characters, else -1; the one before must not
    be spaced either (its written space would join the newline's pre-token in the whole text)."""
    while (newline := text.find("\n", i)) != -1:
        if 0 < newline < len(text) - 1 and not text[newline - 1].isspace() and not text[newline + 1].isspace() \
                and text[newline - 1] not in SPACED:
            return newline
        i = newline + 1
    return -1


def new_bpe() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(ch, ch + " ") for ch in SPACED])  # see above
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # Each replacement takes out exactly the space written after its character: nothing else can follow it.
    tok.decoder = decoders.Sequence([decoders.ByteLevel()] + [decoders.Replace(ch + " ", ch) for ch in SPACED])
    return tok


def _spaced_characters(normalizer: dict | None) -> tuple[str, ...]:
    """The characters a saved normalizer writes a space after: each of its steps replaces a string by itself
    and a space. Any other normalizer (or none) writes nothing that HelloGPT would have to take out."""
    steps = normalizer["normalizers"] if normalizer and normalizer["type"] == "Sequence" else [normalizer]
    spaced = tuple(step["pattern"]["String"] for step in steps if step and step["type"] == "Replace"
                   and "String" in step["pattern"] and step["content"] == step["pattern"]["String"] + " ")
    return spaced if len(spaced) == len(steps) else ()


def train_bpe(texts: Iterable[str], vocab_size: int, show_progress: bool = False) -> HFTokenizer:
    tok = new_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def fingerprint_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_tokenizer(path: Path, remedy: str = "Delete it and run `hellogpt tokenizer train` again.") -> Tokenizer:
    """The tokenizer saved at `path`; `remedy` ends the message when the file is damaged or not a
    HelloGPT-compatible tokenizer (one with <|endoftext|>)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"No tokenizer at {path}. Train one with `hellogpt tokenizer train` "
                        "(or run `python main.py`, which offers to).")
    try:
        hf = HFTokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises plain Exceptions for bad JSON
        raise UserError(f"The tokenizer file {path} cannot be read ({e}). {remedy}")
    if hf.token_to_id(EOT) is None:
        raise UserError(f"The tokenizer {path} has no {EOT} token, which HelloGPT needs to separate documents "
                        f"and to know where generated text ends. {remedy}")
    return Tokenizer(hf, fingerprint_file(path))


def train_tokenizer(home: Home, data_path: Path, vocab_size: int, val_fraction: float,
                    show_progress: bool = False, note: Callable[[str], None] = lambda message: None) -> Tokenizer:
    """Learn BPE merges from the training part of every book (never the validation part), save
    the result atomically to home.tokenizer_path and return it. vocab_size 0: vocab_size_for the text.
    show_progress: the tokenizers library's own progress bars; note receives what is done."""
    if vocab_size and vocab_size < MIN_VOCAB_SIZE:
        raise UserError(f"--vocab-size {vocab_size} is too small: it must be at least {MIN_VOCAB_SIZE} "
                        "(the 256 byte values plus <|endoftext|>). Try 1024 to 8000.")
    books = find_books(data_path)
    started = time.perf_counter()
    train_texts = [split_text(read_book(p), val_fraction)[0] for p in books]
    chars = sum(len(t) for t in train_texts)
    vocab_size = vocab_size or vocab_size_for(chars)
    note(f"Training a byte-level BPE tokenizer (vocabulary {vocab_size:,}) on the training part "
         f"of {len(books)} book(s): {chars:,} characters.")
    # Pieces rather than whole books: the trainer counts words on every core at once.
    pieces = [piece for text in train_texts for piece in split_for_encoding(text)]
    hf = train_bpe(pieces, vocab_size, show_progress=show_progress)
    path = home.tokenizer_path
    with atomic_path(path) as tmp:
        hf.save(str(tmp))
        if path.is_file() and fingerprint_file(path) != fingerprint_file(tmp):
            # Models trained with the old tokenizer need it to load: keep it.
            kept = path.with_name(f"tokenizer.{fingerprint_file(path)}.json")
            shutil.copy2(path, kept)
            note(f"The previous tokenizer differs from the new one; kept as {kept} (models trained "
                 "with it need it back in place of tokenizer.json to load).")
    tokenizer = load_tokenizer(path)
    note(f"Saved {path} (vocabulary {tokenizer.vocab_size:,}) in {time.perf_counter() - started:.1f} s.")
    return tokenizer
