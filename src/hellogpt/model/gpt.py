"""The GPT model, top to bottom as the README lists it:

1. token embedding plus learned positional embedding
2. dropout
3. N transformer blocks, each
     x = x + dropout(attention(LayerNorm(x)))     the attention sub-block
     x = x + dropout(mlp(LayerNorm(x)))           the feed-forward sub-block
   (pre-LayerNorm: the residual stream x itself is never replaced by its normalised copy)
4. final LayerNorm
5. head: a linear map to vocabulary logits (tied to the token embedding by default)

Shapes: B batch, T time (tokens), C d_model, H heads, D head size (C // H), V vocabulary.
The architecture is GPT-2's, so weights move to and from Hugging Face (see hf.py), and
tests check that both compute the same logits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 8000
    max_seq_len: int = 128  # context length: positions 0..max_seq_len-1
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ffn: int = 1024
    dropout: float = 0.1
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2
    tie_embeddings: bool = True  # the head reuses the token embedding matrix
    gelu: str = "tanh"  # the MLP's GELU: "tanh", GPT-2's approximation, or "exact" (with erf)

    def __post_init__(self):
        if self.gelu not in ("tanh", "exact"):
            raise ValueError(f"gelu = {self.gelu!r}: the MLP computes 'tanh' or 'exact'")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, for incremental decoding.

    Prefill the prompt with one forward pass, then feed one token at a time: each step
    only computes the new token's query, key and value and attends to the cached ones.
    It holds at most max_seq_len positions; when it is full, the caller decides what to
    keep (for instance reset it and prefill the last tokens again: positions are absolute,
    so cached keys cannot simply slide).
    """

    def __init__(self, config: GPTConfig, batch_size: int, device, dtype=torch.float32):
        H, D = config.n_heads, config.d_model // config.n_heads
        shape = (config.n_layers, batch_size, H, config.max_seq_len, D)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # how many positions are filled

    def reset(self) -> None:
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this step's (B, H, T, D) keys and values; return all keys and values so far.
        (GPT.forward advances `pos` once every layer has stored its part.)"""
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, H, end, D)


class CausalSelfAttention(nn.Module):
    """Multi-head attention where each position sees itself and the positions before it."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer  # which slot of the KV cache is ours
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)  # queries, keys, values at once
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)  # mixes the heads back together

    def forward(self, x, kv_cache: KVCache | None = None, return_weights=False):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, D)

        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer, k, v)  # (B, H, past + T, D)

        weights = None
        if return_weights:
            # The formula spelled out, for teaching and pictures: softmax(q k^T / sqrt(D)) v.
            scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, H, T, past + T)
            scores = scores.masked_fill(~_causal_mask(T, past, x.device), float("-inf"))
            weights = torch.softmax(scores, dim=-1)  # each row sums to 1
            y = weights @ v  # (B, H, T, D)
        elif past == 0:
            y = causal_attention(q, k, v)  # (B, H, T, D)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v)  # one new token sees every cached one
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_mask(T, past, x.device))  # (B, H, T, D)

        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        return self.proj(y), weights


def causal_attention(q, k, v):
    """softmax(q k^T / sqrt(D)) v, each query over its own and earlier positions: PyTorch's fused kernel.
    Under bfloat16 autocast on a CPU it runs in float32, because there PyTorch's bfloat16 kernel is the
    slower one (its backward pass 4 times slower than float32's, for the two-minute model)."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _causal_mask(T: int, past: int, device) -> torch.Tensor:
    """(T, past + T) booleans: True where query t (at position past + t) may look."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


class MLP(nn.Module):
    """The feed-forward network: widen, GELU, narrow back, at each position on its own."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ffn, bias=config.bias)
        self.proj = nn.Linear(config.d_ffn, config.d_model, bias=config.bias)
        # GPT-2's GELU is the tanh approximation (imported GPT-2 models compute it); new models take the exact
        # one, the same curve to 1e-3 and twice as fast on a CPU (benchmarks/RESULTS.md).
        self.approximate = "tanh" if config.gelu == "tanh" else "none"  # F.gelu's names

    def forward(self, x):  # (B, T, C)
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))  # (B, T, d_ffn) -> (B, T, C)


class Block(nn.Module):
    """One transformer block: an attention sub-block, then a feed-forward sub-block."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, kv_cache=None, return_weights=False):  # x: (B, T, C)
        a, weights = self.attn(self.ln_1(x), kv_cache, return_weights)
        x = x + self.dropout(a)  # attention sub-block, added to the residual stream
        x = x + self.dropout(self.mlp(self.ln_2(x)))  # feed-forward sub-block, added to the residual stream
        return x, weights


class GPT(nn.Module):
    """The whole model, steps 1 to 5 of the list at the top of this file."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)  # 1. token embedding
        self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)  # 1. learned positional embedding
        self.dropout = nn.Dropout(config.dropout)  # 2. dropout
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))  # 3. transformer blocks
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)  # 4. final LayerNorm
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)  # 5. head to vocabulary logits
        if config.tie_embeddings:
            self.head.weight = self.tok_emb.weight  # one matrix both reads and writes tokens
        self._init_weights()

    def _init_weights(self):
        """GPT-2's initialisation: weights normal(0, 0.02), biases 0, LayerNorms 1 (their default).
        The two projections that write into the residual stream in each block get std scaled by
        1/sqrt(2 x layers): 2 x layers of them add up there, and the stream's variance should
        not grow with depth."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layers))

    def forward(self, idx, targets=None, kv_cache: KVCache | None = None, return_weights=False, loss_fn=None):
        """idx: (B, T) token ids. Returns logits (B, T, V) and, with targets (B, T), the mean
        cross-entropy loss (else None). With return_weights, also a list of each layer's attention
        weights (B, H, T, past + T). With kv_cache, idx continues the tokens cached so far.
        With targets and a loss_fn(x, head_weight, targets) (training: loss.linear_cross_entropy), logits
        is None and the loss is computed without ever holding all (B, T, V) logits: less memory, less time."""
        B, T = idx.shape
        past = kv_cache.pos if kv_cache is not None else 0
        if past + T > self.config.max_seq_len:
            raise ValueError(
                f"{past} cached + {T} new tokens exceed the model's context length of "
                f"{self.config.max_seq_len} (max_seq_len): the model has no position embedding beyond it. "
                "Crop the input to its last max_seq_len tokens (with a KV cache: reset it and prefill them)."
            )
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # 1. (B, T, C) + (T, C) -> (B, T, C)
        x = self.dropout(x)  # 2.
        all_weights = []
        for block in self.blocks:  # 3.
            x, weights = block(x, kv_cache, return_weights)  # (B, T, C)
            all_weights.append(weights)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.ln_f(x)  # 4. (B, T, C)

        if targets is not None and loss_fn is not None:
            return None, loss_fn(x, self.head.weight, targets)  # 5. and the loss, together
        logits = self.head(x)  # 5. (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        if return_weights:
            return logits, loss, all_weights
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (a tied head shares the token embedding's)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.pos_emb.weight.numel()
            n -= self.tok_emb.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, forward and backward (for utilisation figures).

        A multiply-add is 2 FLOPs and the backward pass costs twice the forward, so every weight
        that multiplies the token (each Linear, the head included; embeddings are lookups) costs
        6 FLOPs. Attention's q k^T and weights @ v are 2 x T x C multiply-adds per layer, hence
        12 x layers x T x C more (PaLM's appendix B; causal masking is not subtracted, as is customary).
        """
        cfg = self.config
        T = seq_len or cfg.max_seq_len
        matmul_params = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6 * matmul_params + 12 * cfg.n_layers * T * cfg.d_model
