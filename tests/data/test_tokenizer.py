"""The byte-level BPE: lossless on any text, trained on training text only, saved in a standard format."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hellogpt.core.settings import LARGE_TEXT_CHARS, LARGE_VOCAB, SMALL_VOCAB, Config, vocab_size_for
from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.data.tokenizer import EOT, Tokenizer, load_tokenizer, split_for_encoding, train_bpe, train_tokenizer

# Text that breaks tokenizers: emoji (with joiners and skin tones), combining marks, control
# characters, CRLF and lone CR, long whitespace runs, right-to-left script, a BOM, NUL.
TRICKY = ["👩‍👩‍👧", "👍🏽", "🇫🇷", "e\u0301", "\u0301\u0301", "\x00", "\x07", "\x1b[0m", "\r\n", "\r", "\t\t",
          " " * 40, "\n" * 7, "\u00a0", "\u2028", "مرحبا", "日本語", "\ufeff", EOT, "<|", "'s", " 's"]
texts = st.lists(st.sampled_from(TRICKY) | st.text(st.characters(codec="utf-8"), max_size=8)).map("".join)


@given(texts)
@settings(max_examples=300, deadline=None)  # no time limit per example: the machine may be busy
def test_roundtrip_any_text(small_tokenizer, text):
    """(Every book a mirror serves, byte for byte: tests/data/test_gutenberg.py, on a tokenizer trained on all eight.)"""
    assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


def test_token_bytes_join_to_the_text_with_the_written_spaces(small_tokenizer):
    text = "Alice said “Oh dear!” 👍🏽\r\n\nThe end"
    ids = small_tokenizer.encode(text)
    written = text.replace("\n", "\n ").replace("“", "“ ")
    assert b"".join(small_tokenizer.token_bytes(i) for i in ids) == written.encode()


@given(texts)
@settings(max_examples=300, deadline=None)
def test_text_byte_counts_add_up_to_the_text(small_tokenizer, text):
    """Bits per byte divide by these counts (evaluate.py): the text's own UTF-8 bytes, the spaces the
    tokenizer wrote not counted, whichever token holds them."""
    counts = small_tokenizer.text_byte_counts(small_tokenizer.encode(text))
    assert counts.sum() == len(text.encode()) and (counts >= 0).all()


def test_text_byte_counts_where_the_quotation_mark_is_split_across_tokens():
    """A tokenizer trained on ASCII has no token for “ (three bytes): its written space is still found."""
    tok = Tokenizer(train_bpe(["the cat sat on the mat. " * 50], vocab_size=280, show_progress=False), "ascii")
    for text in ("“ ", "x —“y", "“‘Hi", EOT + "“", "said “\n“"):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.text_byte_counts(ids).sum() == len(text.encode())


def test_a_prompt_ends_where_training_text_would_go_on():
    """Training text has the written space on the next word ("\n", " The"): a prompt that ends in a newline
    or a quotation mark does not end in that space, so the model continues it as it learned to."""
    tok = Tokenizer(train_bpe(["He said,\nThe cat sat.\n“The mat,” he said. “The end.”\n"] * 50, vocab_size=400,
                              show_progress=False), "prompts")
    for prompt in ("He said,\n", "He said. “", "He said,\n\n", "\n"):
        ids = tok.encode_prompt(prompt)
        assert ids == tok.encode(prompt + "The cat")[:len(ids)]
        assert tok.decode(ids) == prompt
    assert tok.encode_prompt("He said") == tok.encode("He said")


def test_pieces_are_cut_after_no_spaced_character():
    """A quotation mark just before a newline: its written space joins the newline in the whole text
    (" \n" is a token here), so the text is not cut there."""
    tok = Tokenizer(train_bpe(["He said: \nYes. “\nNo. word \nmore “\nx\n"] * 200, vocab_size=300,
                              show_progress=False), "cut")
    text = "word " * 10 + "said “\nYes\nmore"
    assert [i for piece in split_for_encoding(text, 8) for i in tok.encode(piece)] == tok.encode(text)


def test_a_word_after_a_newline_or_a_quotation_mark_is_the_same_token_as_after_a_space(small_tokenizer):
    """Books are hard-wrapped: the word that starts a line (or a quotation) is the same word and token as
    mid-line."""
    words = small_tokenizer.encode(" the Queen said")
    for before in ("said\n", "said “", "said "):
        assert small_tokenizer.encode(before + "the Queen said")[-len(words):] == words


def test_a_tokenizer_saved_without_the_spaces_works_as_before(small_tokenizer, tmp_path):
    """tokenizer.json files from before the written spaces (and GPT-2's) keep their exact ids and byte counts."""
    from tokenizers import decoders

    hf = small_tokenizer.hf.from_str(small_tokenizer.hf.to_str())
    hf.normalizer = None
    hf.decoder = decoders.ByteLevel()
    hf.save(str(tmp_path / "tokenizer.json"))
    old = load_tokenizer(tmp_path / "tokenizer.json")
    text = "said\n“the Queen”\n"
    ids = old.encode(text)
    assert old.spaced == () and small_tokenizer.spaced == ("\n", "“")
    assert old.decode(ids) == text
    assert b"".join(old.token_bytes(i) for i in ids) == text.encode()
    assert old.text_byte_counts(ids).sum() == len(text.encode())


def test_spaced_characters_are_read_from_the_saved_normalizer(small_tokenizer, tmp_path):
    """A tokenizer.json that writes a space after newlines only is read as such, not as writing none."""
    from tokenizers import normalizers

    hf = small_tokenizer.hf.from_str(small_tokenizer.hf.to_str())
    hf.normalizer = normalizers.Replace("\n", "\n ")
    hf.save(str(tmp_path / "tokenizer.json"))
    newline_only = load_tokenizer(tmp_path / "tokenizer.json")
    text = "one\ntwo\n\n“three"
    assert newline_only.spaced == ("\n",)
    assert newline_only.text_byte_counts(newline_only.encode(text)).sum() == len(text.encode())


@given(st.lists(st.sampled_from(["word", " word", "\n", "\n\n", " ", "  ", "\t", "\r", "“", "é", "'s", "9", "\u2028",
                                 "\x85", "\x1c", "\u180e", "\u200b", "\u00a0", "\u3000"]) | st.characters(codec="utf-8"))
       .map("".join), st.integers(1, 12))
@settings(deadline=None)
def test_pieces_tokenize_as_the_whole(small_tokenizer, text, size):
    """encode_documents cuts long texts into pieces for speed; the ids must not change (whatever counts as
    whitespace, for Python or for the pre-tokenizer's regex)."""
    pieces = split_for_encoding(text, size)
    assert "".join(pieces) == text
    assert [i for p in pieces for i in small_tokenizer.encode(p)] == small_tokenizer.encode(text)
    assert small_tokenizer.encode_documents([text])[0].tolist() == small_tokenizer.encode(text)


def test_trains_on_the_training_part_only(tmp_path):
    train_text = "the cat sat on the mat. " * 400
    val_text = "zqxj " * 100  # no "zq" anywhere in training text: no merge may contain it
    book = tmp_path / "book.txt"
    book.write_text(train_text + val_text)
    assert len(val_text) / len(train_text + val_text) < 0.1
    tok = train_tokenizer(Home(tmp_path), book, vocab_size=400, val_fraction=0.1, show_progress=False)
    vocab = tok.hf.get_vocab()
    assert any("cat" in t for t in vocab)
    assert not any("zq" in t for t in vocab)


def test_saved_file_loads_in_hugging_face_libraries(small_tokenizer, tmp_path, bundled_dir):
    """The same file works with tokenizers.Tokenizer and transformers.PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    home = Home(tmp_path)
    tok = train_tokenizer(home, bundled_dir / "pg55.txt", vocab_size=512, val_fraction=0.1, show_progress=False)
    assert tok.fingerprint == small_tokenizer.fingerprint  # training is deterministic
    assert [p.name for p in home.tokenizer_path.parent.iterdir()] == ["tokenizer.json"]  # no temporary left
    text = "“Curiouser and curiouser!” cried Alice 👩‍👩‍👧\r\n"
    hf = HFTokenizer.from_file(str(home.tokenizer_path))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(home.tokenizer_path))
    assert hf.encode(text).ids == fast.encode(text) == tok.encode(text)
    assert fast.decode(fast.encode(text)) == text
    assert tok.eot_id == hf.token_to_id(EOT) and tok.encode(EOT) == [tok.eot_id]
    assert load_tokenizer(home.tokenizer_path).vocab_size == 512


def test_retraining_keeps_a_different_previous_tokenizer(tmp_path, bundled_dir):
    """Models trained with the old tokenizer cannot load without it, so it is kept beside the new one."""
    home, book = Home(tmp_path), bundled_dir / "pg55.txt"
    old = train_tokenizer(home, book, vocab_size=300, val_fraction=0.1, show_progress=False)
    train_tokenizer(home, book, vocab_size=300, val_fraction=0.1, show_progress=False)
    assert [p.name for p in home.tokenizer_dir.iterdir()] == ["tokenizer.json"]  # same file: nothing to keep
    notes = []
    new = train_tokenizer(home, book, vocab_size=320, val_fraction=0.1, note=notes.append)
    kept = home.tokenizer_dir / f"tokenizer.{old.fingerprint}.json"
    # What was done is told through `note` (the application prints it): what it learns from, what it kept, where.
    assert len(notes) == 3 and notes[0].startswith("Training a byte-level BPE tokenizer (vocabulary 320) on the "
                                                   "training part of 1 book(s)")
    assert f"kept as {kept}" in notes[1] and notes[2].startswith(f"Saved {home.tokenizer_path} (vocabulary 320)")
    assert sorted(p.name for p in home.tokenizer_dir.iterdir()) == sorted(["tokenizer.json", kept.name])
    assert load_tokenizer(kept).fingerprint == old.fingerprint != new.fingerprint


def test_without_a_vocab_size_the_books_size_decides(tmp_path, bundled_dir):
    """Pride and Prejudice (656 k training characters) gets the larger vocabulary, Oz (187 k) the smaller; the
    command line says which, and --vocab-size still decides when given."""
    home = Home(tmp_path)
    assert train_tokenizer(home, bundled_dir / "pg1342.txt", vocab_size=0, val_fraction=0.1,
                           show_progress=False).vocab_size == LARGE_VOCAB
    assert train_tokenizer(home, bundled_dir / "pg55.txt", vocab_size=0, val_fraction=0.1,
                           show_progress=False).vocab_size == SMALL_VOCAB
    assert vocab_size_for(LARGE_TEXT_CHARS - 1) == SMALL_VOCAB and vocab_size_for(LARGE_TEXT_CHARS) == LARGE_VOCAB
    assert Config().vocab_size == 0  # the default is the rule


@pytest.mark.integration
def test_tokenizer_command_sizes_the_vocabulary_by_the_books(run_hellogpt, tmp_path, bundled_dir):
    book = bundled_dir / "pg1342.txt"
    r = run_hellogpt("--home", tmp_path, "tokenizer", "train", "--data", book)
    assert r.returncode == 0, r.stderr
    assert f"(vocabulary {LARGE_VOCAB:,}) on the training part of 1 book(s): 655,870 characters" in r.stdout
    r = run_hellogpt("--home", tmp_path, "tokenizer", "train", "--data", book, "--vocab-size", "1024")
    assert r.returncode == 0, r.stderr
    assert load_tokenizer(Home(tmp_path).tokenizer_path).vocab_size == 1024


def test_vocab_size_too_small(tmp_path, bundled_dir):
    with pytest.raises(UserError, match="--vocab-size 100 is too small"):
        train_tokenizer(Home(tmp_path), bundled_dir / "pg55.txt", vocab_size=100, val_fraction=0.1,
                        show_progress=False)


def test_encode_documents_dtype(small_tokenizer):
    ids = small_tokenizer.encode_documents(["a b", ""], dtype=np.uint16)
    assert [a.dtype for a in ids] == [np.uint16, np.uint16] and len(ids[1]) == 0
