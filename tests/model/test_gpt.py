"""The model: attention paths, KV cache, context limit, initialisation, size and FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from hellogpt.core.errors import UserError
from hellogpt.core.settings import Config
from hellogpt.model.gpt import GPT, GPTConfig, KVCache


@torch.no_grad()
def test_sdpa_and_explicit_attention_weights_agree(make_gpt):
    model = make_gpt()
    idx = torch.randint(0, model.config.vocab_size, (3, model.config.max_seq_len))
    fast, _ = model(idx)
    explicit, _, weights = model(idx, return_weights=True)
    assert (fast - explicit).abs().max() < 1e-5
    assert len(weights) == model.config.n_layers
    for w in weights:
        assert w.shape == (3, model.config.n_heads, idx.size(1), idx.size(1))
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))  # each row is a distribution
        assert (w.triu(diagonal=1) == 0).all()  # and never looks ahead


@torch.no_grad()
def test_attention_weights_with_a_kv_cache(make_gpt):
    """The explicit path also works one token at a time: its last rows equal the full pass's."""
    model = make_gpt()
    idx = torch.randint(0, model.config.vocab_size, (1, 12))
    _, _, full = model(idx, return_weights=True)
    cache = KVCache(model.config, batch_size=1, device="cpu")
    model(idx[:, :11], kv_cache=cache)
    logits, _, step = model(idx[:, 11:], kv_cache=cache, return_weights=True)
    for w_full, w_step in zip(full, step):
        assert w_step.shape == (1, model.config.n_heads, 1, 12)
        assert (w_full[:, :, -1:] - w_step).abs().max() < 1e-5


@pytest.mark.parametrize("prompt_len", [1, 31, 32])  # shorter than, and equal to, the context of 32
def test_kv_cache_equals_full_recomputation(make_gpt, greedy, prompt_len):
    """At every step the cached logits equal a full pass over the (cropped) context, so greedy
    continuations are identical, also past the point where the cache fills up and is refilled."""
    model = make_gpt()
    prompt = torch.randint(0, model.config.vocab_size, (prompt_len,)).tolist()
    n = model.config.max_seq_len - prompt_len + 5  # runs past the context
    tokens_full, logits_full = greedy(model, prompt, n, use_cache=False)
    tokens_cached, logits_cached = greedy(model, prompt, n, use_cache=True)
    assert (logits_full - logits_cached).abs().max() < 1e-5
    assert tokens_cached == tokens_full


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 31), max_size=5, unique=True))
def test_prefill_in_chunks_equals_one_pass(cuts):
    """Any split of the input into chunks fed through the cache gives the one-pass logits
    (chunks after the first take the masked path of scaled_dot_product_attention)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, max_seq_len=32, d_model=32, n_layers=2, n_heads=2, d_ffn=64)).eval()
    idx = torch.randint(0, 100, (2, 32))
    bounds = [0, *sorted(cuts), 32]
    cache = KVCache(model.config, batch_size=2, device="cpu")
    with torch.no_grad():
        full, _ = model(idx)
        pieces = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in zip(bounds, bounds[1:])]
    assert (torch.cat(pieces, dim=1) - full).abs().max() < 1e-5


def test_context_limit_is_a_clear_error(make_gpt):
    model = make_gpt()
    T = model.config.max_seq_len
    with pytest.raises(ValueError, match="context length of 32"):
        model(torch.zeros(1, T + 1, dtype=torch.long))
    cache = KVCache(model.config, batch_size=1, device="cpu")
    with torch.no_grad():
        model(torch.zeros(1, T, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="32 cached \\+ 1 new tokens exceed"):
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
    assert cache.pos == T  # the refused step changed nothing


def test_residual_stream_is_kept():
    """Pre-LayerNorm: with both sub-blocks' outputs zeroed, a block passes x through unchanged
    (the seed's `x = ln(x); x = x + attn(x)` would return a normalised copy instead)."""
    model = GPT(GPTConfig(vocab_size=50, max_seq_len=8, d_model=16, n_layers=1, n_heads=2, d_ffn=32, dropout=0.0))
    block = model.blocks[0]
    with torch.no_grad():
        for proj in (block.attn.proj, block.mlp.proj):
            proj.weight.zero_()
            proj.bias.zero_()
        x = 3.0 * torch.randn(2, 8, 16) + 1.0
        y, _ = block(x)
    assert torch.equal(x, y)


def test_gpt2_initialisation():
    n_layers = 4
    model = GPT(GPTConfig(vocab_size=2000, max_seq_len=64, d_model=128, n_layers=n_layers, n_heads=4, d_ffn=512))
    residual_std = 0.02 / math.sqrt(2 * n_layers)
    for name, p in model.named_parameters():
        if "ln" in name:
            expected = torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)
            assert torch.equal(p, expected), name
        elif name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        else:
            assert abs(p.mean().item()) < 1e-3, name
            std = residual_std if name.endswith("proj.weight") else 0.02
            assert p.std().item() == pytest.approx(std, rel=0.05), name
    assert model.head.weight is model.tok_emb.weight


def test_untied_head_has_its_own_matrix():
    model = GPT(GPTConfig(vocab_size=100, max_seq_len=8, d_model=16, n_layers=1, n_heads=2, d_ffn=32,
                          tie_embeddings=False))
    assert model.head.weight is not model.tok_emb.weight
    assert not torch.equal(model.head.weight, model.tok_emb.weight)


def test_initial_loss_is_that_of_a_uniform_guess():
    """Small initial weights give near-uniform predictions: cross-entropy about ln(V)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, max_seq_len=32, d_model=64, n_layers=2, n_heads=4, d_ffn=256)).eval()
    idx = torch.randint(0, 500, (4, 32))
    _, loss = model(idx, targets=torch.roll(idx, -1, dims=1))
    assert loss.item() == pytest.approx(math.log(500), abs=0.05)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_parameter_count(bias, tie):
    V, T, C, L, F = 300, 32, 64, 3, 200
    model = GPT(GPTConfig(vocab_size=V, max_seq_len=T, d_model=C, n_layers=L, n_heads=4, d_ffn=F,
                          bias=bias, tie_embeddings=tie))
    per_block = 2 * C + 3 * C * C + C * C + 2 * C * F  # two LayerNorm gains, qkv, proj, fc, proj
    if bias:
        per_block += 2 * C + 3 * C + C + F + C  # LayerNorm shifts and Linear biases
    embeddings = V * C + T * C
    expected = embeddings + L * per_block + (2 * C if bias else C) + (0 if tie else V * C)
    assert model.num_params() == expected
    assert model.num_params(non_embedding=True) == expected - embeddings - (0 if tie else V * C)


def test_flops_per_token_counts_every_matmul():
    """torch's FLOP counter, run over a training step (forward and backward) with the explicit
    attention formula, counts exactly flops_per_token() per token."""
    model = GPT(GPTConfig(vocab_size=300, max_seq_len=32, d_model=64, n_layers=2, n_heads=4, d_ffn=256, dropout=0.0))
    B, T = 2, 32
    idx = torch.randint(0, 300, (B, T))
    with FlopCounterMode(display=False) as counter:
        _, loss, _ = model(idx, targets=idx, return_weights=True)
        loss.backward()
    assert counter.get_total_flops() == model.flops_per_token(T) * B * T


def test_d_model_must_split_into_heads():
    """The model file knows no UserError (it imports torch alone): a bad shape is a ValueError there, and
    the settings refuse it first, with a message for the user."""
    with pytest.raises(ValueError, match="divisible by n_heads"):
        GPTConfig(d_model=100, n_heads=3)
    with pytest.raises(UserError, match="n_heads = 3 is out of range: it must be at least 1 and divide d_model"):
        Config(d_model=100, n_heads=3)
