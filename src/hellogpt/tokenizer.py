"""Byte-level BPE tokenizer (Hugging Face `tokenizers`), as GPT-2 has.

Text is first turned into bytes, so every string is representable and
`decode(encode(s)) == s` holds for any valid Unicode. Merges are learned from the
books. `<|endoftext|>` separates documents. Saved as artifacts/tokenizer/tokenizer.json.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from hellogpt.errors import UserError

EOT = "<|endoftext|>"


class Tokenizer:
    """A thin wrapper that names what HelloGPT needs: encode, decode, the end-of-text id."""

    def __init__(self, hf: HFTokenizer, fingerprint: str):
        self.hf = hf
        self.fingerprint = fingerprint  # sha256 of tokenizer.json: checkpoints remember which tokenizer they need
        self.eot_id = hf.token_to_id(EOT)
        self.vocab_size = hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (a token may hold part of a UTF-8 character)."""
        return bytes(_BYTE_DECODER[ch] for ch in self.hf.id_to_token(token_id)) if token_id != self.eot_id \
            else EOT.encode()


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


def new_bpe() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, show_progress: bool = True) -> HFTokenizer:
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


def load_tokenizer(path: Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"No tokenizer at {path}. Train one with `hellogpt tokenizer train` "
                        "(or run `python main.py`, which offers to).")
    try:
        hf = HFTokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises plain Exceptions for bad JSON
        raise UserError(f"The tokenizer file {path} cannot be read ({e}). Delete it and run "
                        "`hellogpt tokenizer train` again.")
    if hf.token_to_id(EOT) is None:
        raise UserError(f"The tokenizer {path} has no {EOT} token, so it was not made by HelloGPT. "
                        "Delete it and run `hellogpt tokenizer train`.")
    return Tokenizer(hf, fingerprint_file(path))
