"""Tokenized data: the memmap layout, the cache and its invalidation, and the batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.data import tokens as tokens_module
from hellogpt.data.books import split_text
from hellogpt.data.tokenizer import train_tokenizer
from hellogpt.data.tokens import EpochSampler, num_windows, prepare_tokens, sequential_batches, token_dtype, windows
from helpers import bundled


@pytest.fixture
def books(tmp_path):
    """Two short books: slices of Oz (after its header marker) and of Pride and Prejudice."""
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "oz.txt").write_text(bundled(55)[100:20_100])
    (folder / "pride.txt").write_text(bundled(1342)[50_000:65_000])
    return folder


def test_layout_each_part_then_eot(tmp_path, books, small_tokenizer):
    tok = small_tokenizer
    progress = []
    data = prepare_tokens(Home(tmp_path), books, tok, val_fraction=0.1, on_progress=lambda *p: progress.append(p))
    texts = [p.read_text() for p in sorted(books.glob("*.txt"))]
    for split, part in (("train", 0), ("val", 1)):
        expected = [i for t in texts for i in tok.encode(split_text(t, 0.1)[part]) + [tok.eot_id]]
        assert data.split(split).tolist() == expected
        assert data.split(split).dtype == np.uint16
    # The validation text is exactly the last 10% of each book.
    val_docs = tok.decode(data.val.tolist()).split("<|endoftext|>")[:-1]
    assert val_docs == [split_text(t, 0.1)[1] for t in texts]
    assert data.text_bytes("val") == sum(len(v.encode()) for v in val_docs)
    assert [b.name for b in data.books] == ["oz.txt", "pride.txt"]
    assert [b.train_tokens + 1 for b in data.books] == [len(tok.encode(split_text(t, 0.1)[0])) + 1 for t in texts]
    # on_progress heard of each book's bytes as they were done; from the cache there is nothing to report.
    total = sum(len(t.encode()) for t in texts)
    assert progress == [(len(texts[0].encode()), total), (total, total)]
    prepare_tokens(Home(tmp_path), books, tok, val_fraction=0.1, on_progress=lambda *p: progress.append(p))
    assert len(progress) == 2


def test_cache_is_reused_and_rebuilt_when_books_or_tokenizer_change(tmp_path, books, small_tokenizer, monkeypatch):
    home = Home(tmp_path)
    first = prepare_tokens(home, books, small_tokenizer, 0.1)
    assert sorted(p.name for p in home.tokens_dir.iterdir()) == [first.path.name]  # no temporary left

    builds = []
    real_build = tokens_module._build_cache
    monkeypatch.setattr(tokens_module, "_build_cache", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    again = prepare_tokens(home, books, small_tokenizer, 0.1)
    assert builds == [] and again.path == first.path and np.array_equal(again.train, first.train)

    with open(books / "oz.txt", "a") as fh:
        fh.write("One more line.\n")
    edited = prepare_tokens(home, books, small_tokenizer, 0.1)
    assert builds == [1] and edited.path != first.path and edited.fingerprint != first.fingerprint

    other_tokenizer = train_tokenizer(Home(tmp_path / "other"), books, 300, 0.1)
    retokenized = prepare_tokens(home, books, other_tokenizer, 0.1)
    assert builds == [1, 1] and retokenized.path not in (first.path, edited.path)
    assert retokenized.fingerprint == edited.fingerprint  # same books, other tokenizer


def test_a_failed_build_leaves_no_cache(tmp_path, books, small_tokenizer, monkeypatch):
    home = Home(tmp_path)

    def interrupted(texts, dtype):
        raise KeyboardInterrupt

    monkeypatch.setattr(small_tokenizer, "encode_documents", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_tokens(home, books, small_tokenizer, 0.1)
    assert list(home.tokens_dir.iterdir()) == []


def test_no_validation_split(tmp_path, books, small_tokenizer):
    data = prepare_tokens(Home(tmp_path), books, small_tokenizer, val_fraction=0.0)
    assert len(data.val) == 0 and data.train.tolist().count(small_tokenizer.eot_id) == 2


def test_token_dtype():
    assert token_dtype(8000) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32


def test_windows_are_runs_of_tokens_and_their_next_tokens():
    tokens = np.arange(1000, dtype=np.uint16)  # each window is a run of consecutive numbers
    x, y = windows(tokens, torch.tensor([0, 5, 983]), seq_len=16)
    assert x.shape == y.shape == (3, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(3, 16)) and x[2, -1] == 998
    assert torch.equal(y, x + 1)


@settings(max_examples=60, deadline=None)
@given(n_tokens=st.integers(2, 400), seq_len=st.integers(1, 40), seed=st.integers(0, 99))
def test_each_epoch_visits_every_window_once(n_tokens, seq_len, seed):
    """An epoch: back-to-back windows from an offset below seq_len, each once, all inside the tokens."""
    tokens = np.zeros(n_tokens, dtype=np.uint16)
    if n_tokens < seq_len + 1:
        with pytest.raises(UserError, match=f"only {n_tokens:,} tokens"):
            EpochSampler(tokens, seq_len, seed)
        return
    sampler = EpochSampler(tokens, seq_len, seed)
    for _ in range(3):
        first = sampler.next(1)  # the first window of an epoch
        rest = sampler.next(len(sampler.order) - 1)  # and uses it up
        starts = sorted(torch.cat([first, rest]).tolist())
        offset = starts[0]
        assert 0 <= offset < seq_len
        assert starts == list(range(offset, n_tokens - seq_len, seq_len))  # each window once, none missing
        assert starts[-1] + seq_len + 1 <= n_tokens  # the last window fits
        assert n_tokens - (starts[-1] + seq_len + 1) < seq_len  # and there was no room for another


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 40), batch=st.integers(1, 20), seed=st.integers(0, 99))
def test_sampler_resumes_exactly(cut, batch, seed):
    """The same seed gives the same windows, and a sampler rebuilt from state_dict() after any step goes
    on as if it had never stopped (across the ends of epochs too: 60 batches span several)."""
    tokens = np.zeros(120, dtype=np.uint16)
    reference = EpochSampler(tokens, 7, seed)
    straight = torch.cat([reference.next(batch) for _ in range(60)])
    first = EpochSampler(tokens, 7, seed)
    before = [first.next(batch) for _ in range(cut)]
    resumed = EpochSampler(tokens, 7, seed + 1)  # its own seed does not matter once the state is loaded
    resumed.load_state_dict(first.state_dict())
    after = [resumed.next(batch) for _ in range(60 - cut)]
    assert torch.equal(torch.cat(before + after), straight)
    assert len(straight) == 60 * batch


def test_sequential_batches_cover_every_window_once():
    tokens = np.arange(103, dtype=np.uint16)
    assert num_windows(tokens, 10) == 10
    xs, ys = zip(*sequential_batches(tokens, batch_size=4, seq_len=10))
    assert [len(x) for x in xs] == [4, 4, 2]
    assert torch.equal(torch.cat(xs).flatten(), torch.arange(100))
    assert torch.equal(torch.cat(ys).flatten(), torch.arange(1, 101))
