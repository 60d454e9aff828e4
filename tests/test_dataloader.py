"""Tokenized data: the memmap layout, the cache and its invalidation, and the batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hellogpt import dataloader
from hellogpt.corpus import split_text
from hellogpt.dataloader import get_batch, num_windows, prepare_tokens, sequential_batches, token_dtype
from hellogpt.errors import UserError
from hellogpt.paths import Home
from hellogpt.tokenizer import train_tokenizer


@pytest.fixture
def books(tmp_path, corpus_dir):
    """Two short books: slices of Alice (with its BOM-free start) and of Frankenstein."""
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "alice.txt").write_text((corpus_dir / "pg11.txt").read_text(encoding="utf-8")[:20_000])
    (folder / "frankenstein.txt").write_text((corpus_dir / "pg84.txt").read_text(encoding="utf-8")[:15_000])
    return folder


def test_layout_each_part_then_eot(tmp_path, books, small_tokenizer):
    tok = small_tokenizer
    data = prepare_tokens(Home(tmp_path), books, tok, val_fraction=0.1, show_progress=False)
    texts = [p.read_text() for p in sorted(books.glob("*.txt"))]
    for split, part in (("train", 0), ("val", 1)):
        expected = [i for t in texts for i in tok.encode(split_text(t, 0.1)[part]) + [tok.eot_id]]
        assert data.split(split).tolist() == expected
        assert data.split(split).dtype == np.uint16
    # The validation text is exactly the last 10% of each book.
    val_docs = tok.decode(data.val.tolist()).split("<|endoftext|>")[:-1]
    assert val_docs == [split_text(t, 0.1)[1] for t in texts]
    assert data.text_bytes("val") == sum(len(v.encode()) for v in val_docs)
    assert [b.name for b in data.books] == ["alice.txt", "frankenstein.txt"]
    assert [b.train_tokens + 1 for b in data.books] == [len(tok.encode(split_text(t, 0.1)[0])) + 1 for t in texts]


def test_cache_is_reused_and_rebuilt_when_books_or_tokenizer_change(tmp_path, books, small_tokenizer, monkeypatch):
    home = Home(tmp_path)
    first = prepare_tokens(home, books, small_tokenizer, 0.1, show_progress=False)
    assert sorted(p.name for p in home.tokens_dir.iterdir()) == [first.path.name]  # no temporary left

    builds = []
    real_build = dataloader._build_cache
    monkeypatch.setattr(dataloader, "_build_cache", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    again = prepare_tokens(home, books, small_tokenizer, 0.1, show_progress=False)
    assert builds == [] and again.path == first.path and np.array_equal(again.train, first.train)

    with open(books / "alice.txt", "a") as fh:
        fh.write("One more line.\n")
    edited = prepare_tokens(home, books, small_tokenizer, 0.1, show_progress=False)
    assert builds == [1] and edited.path != first.path and edited.fingerprint != first.fingerprint

    other_tokenizer = train_tokenizer(Home(tmp_path / "other"), books, 300, 0.1, show_progress=False)
    retokenized = prepare_tokens(home, books, other_tokenizer, 0.1, show_progress=False)
    assert builds == [1, 1] and retokenized.path not in (first.path, edited.path)
    assert retokenized.fingerprint == edited.fingerprint  # same books, other tokenizer


def test_a_failed_build_leaves_no_cache(tmp_path, books, small_tokenizer, monkeypatch):
    home = Home(tmp_path)

    def interrupted(texts, dtype):
        raise KeyboardInterrupt

    monkeypatch.setattr(small_tokenizer, "encode_documents", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_tokens(home, books, small_tokenizer, 0.1, show_progress=False)
    assert list(home.tokens_dir.iterdir()) == []


def test_no_validation_split(tmp_path, books, small_tokenizer):
    data = prepare_tokens(Home(tmp_path), books, small_tokenizer, val_fraction=0.0, show_progress=False)
    assert len(data.val) == 0 and data.train.tolist().count(small_tokenizer.eot_id) == 2


def test_token_dtype():
    assert token_dtype(8000) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32


def test_get_batch_slices_random_windows():
    tokens = np.arange(1000, dtype=np.uint16)  # each window is a run of consecutive numbers
    x, y = get_batch(tokens, batch_size=8, seq_len=16, generator=torch.Generator().manual_seed(0), device="cpu")
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(8, 16))
    assert torch.equal(y, x + 1)
    assert len(set(x[:, 0].tolist())) > 1  # random starts


def test_get_batch_is_deterministic_and_reaches_both_ends():
    tokens = np.arange(20, dtype=np.uint32)
    x1, _ = get_batch(tokens, 64, 4, torch.Generator().manual_seed(7), "cpu")
    x2, _ = get_batch(tokens, 64, 4, torch.Generator().manual_seed(7), "cpu")
    assert torch.equal(x1, x2)
    _, y = get_batch(tokens, 2000, 4, torch.Generator().manual_seed(1), "cpu")
    assert set(y[:, 0].tolist()) == set(range(1, 17))  # starts 0 to 15: the last window ends on the last token


def test_get_batch_on_too_little_text():
    with pytest.raises(UserError, match="only 10 tokens.*max_seq_len \\+ 1 = 11"):
        get_batch(np.arange(10, dtype=np.uint16), 4, 10, torch.Generator(), "cpu")


def test_sequential_batches_cover_every_window_once():
    tokens = np.arange(103, dtype=np.uint16)
    assert num_windows(tokens, 10) == 10
    xs, ys = zip(*sequential_batches(tokens, batch_size=4, seq_len=10))
    assert [len(x) for x in xs] == [4, 4, 2]
    assert torch.equal(torch.cat(xs).flatten(), torch.arange(100))
    assert torch.equal(torch.cat(ys).flatten(), torch.arange(1, 101))
