"""How well a model predicts text it did not train on: loss, perplexity, bits per byte.

The validation tokens are cut into every non-overlapping window of `seq_len` targets
(window i reads tokens i*T .. i*T+T-1 and predicts i*T+1 .. i*T+T). Over all windows:

    loss           = sum of the target tokens' negative log-likelihood (nats) / number of targets
    perplexity     = exp(loss): the model is as unsure as a uniform choice among that many tokens
    bits per byte  = the same sum / (ln 2 x the UTF-8 bytes of text those target tokens stand for,
                     without the spaces the tokenizer writes: Tokenizer.text_byte_counts)

Bits per byte does not depend on the tokenizer, so models with different vocabularies compare.

`hellogpt eval` prints them for any checkpoint on any books.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hellogpt.core.device import autocast
from hellogpt.data.tokens import sequential_batches
from hellogpt.training.loss import linear_cross_entropy


@dataclass
class EvalResult:
    nll: float  # summed negative log-likelihood of the target tokens, in nats
    tokens: int  # target tokens
    bytes: int  # UTF-8 bytes of text the target tokens stand for

    @property
    def loss(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_byte(self) -> float:
        return self.nll / (math.log(2) * self.bytes)

    def to_dict(self) -> dict:
        return {**asdict(self), "loss": self.loss, "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte}


@torch.no_grad()
def evaluate(model, tokens: np.ndarray, tokenizer, seq_len: int, batch_size: int = 16, device="cpu",
             rank: int = 0, world_size: int = 1) -> EvalResult:
    """Sums over every non-overlapping window of `tokens` (see the module docstring).

    With world_size > 1, this rank takes every world_size-th batch of windows, starting at its
    rank; the ranks' sums add up to the whole (distributed.all_sum)."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    nll, n_tokens, n_bytes = 0.0, 0, 0
    # Bytes of text per token (Tokenizer.text_byte_counts), cut into the same windows as the tokens.
    byte_counts = sequential_batches(tokenizer.text_byte_counts(tokens), batch_size, seq_len)
    for i, ((x, y), (_, y_bytes)) in enumerate(zip(sequential_batches(tokens, batch_size, seq_len, device),
                                                   byte_counts)):  # (B, T) each
        if i % world_size != rank:
            continue
        with autocast(device):
            _, loss = model(x, y, loss_fn=linear_cross_entropy)  # mean over the B x T targets, no (B, T, V) logits held
        nll += loss.item() * y.numel()
        n_tokens += y.numel()
        n_bytes += int(y_bytes.sum())
    model.train(was_training)
    return EvalResult(nll, n_tokens, n_bytes)
