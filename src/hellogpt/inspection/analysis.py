"""Look inside the model on a prompt: what `hellogpt inspect "PROMPT"` shows.

Five views, each printed in the terminal (app/reports.py) and drawn into one report
folder (figures plus an index.html that shows them all: figures.py, report.py):

1. tokenization: the prompt's tokens, with their ids and bytes;
2. next token: the k likeliest next tokens and the entropy of the whole distribution;
3. attention: every head's weights over the prompt, and what the last token looks at most;
4. logit lens: the next-token guess read off the residual stream after each block;
5. embeddings: the most frequent training tokens' embeddings, projected to 2-D by PCA.

Everything comes from ONE forward pass through the model's own explicit-attention path,
`model(idx, return_weights=True)`; forward hooks on the blocks catch the residual stream
after each block on the way. Nothing here re-implements the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.core.settings import Config
from hellogpt.data.books import data_path
from hellogpt.data.tokenizer import Tokenizer
from hellogpt.data.tokens import prepare_tokens

LENS_TOP = 5  # tokens per block in the logit lens
PCA_TOKENS = 300  # how many of the most frequent training tokens the embedding map shows
_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(token: bytes) -> str:
    """A token's text with whitespace drawn (␣ ↵ ⇥) and bytes that are not whole UTF-8 shown as \\xNN."""
    text = token.decode("utf-8", errors="backslashreplace")
    return "".join(_VISIBLE.get(ch, ch if ch.isprintable() else ch.encode("unicode_escape").decode()) for ch in text)


@dataclass
class Inspection:
    """What one forward pass over the prompt shows. T prompt tokens, L layers, H heads, V vocabulary."""

    tokenizer: Tokenizer
    ids: list[int]  # the prompt's token ids
    logits: torch.Tensor  # (V,) the model's output at the last position: scores for the next token
    attention: list[torch.Tensor]  # L x (H, T, T): row t = how token t spreads its attention over tokens 0..t
    lens_logits: torch.Tensor  # (L, V) the same scores read off the residual stream after each block

    @property
    def probs(self) -> torch.Tensor:  # (V,) the next-token distribution
        return torch.softmax(self.logits, dim=-1)

    @property
    def lens_probs(self) -> torch.Tensor:  # (L, V)
        return torch.softmax(self.lens_logits, dim=-1)

    def label(self, token_id: int) -> str:
        return visible(self.tokenizer.token_bytes(token_id))

    @property
    def labels(self) -> list[str]:
        return [self.label(i) for i in self.ids]

    def top(self, k: int, probs: torch.Tensor | None = None) -> list[tuple[int, float]]:
        """The k likeliest (token id, probability) pairs of `probs` (default: the model's output)."""
        probs = self.probs if probs is None else probs
        values, indices = probs.topk(min(k, probs.numel()))
        return list(zip(indices.tolist(), values.tolist()))

    @property
    def entropy_bits(self) -> float:
        """How unsure the model is: 0 bits = certain, log2(V) bits = every token equally likely."""
        return (torch.special.entr(self.probs).sum() / math.log(2)).item()


def encode_prompt(tokenizer, prompt: str, max_seq_len: int) -> list[int]:
    """The prompt's token ids, or a clear error if it is empty or does not fit the context."""
    ids = tokenizer.encode_prompt(prompt)
    if not ids:
        raise UserError('The prompt is empty. Give some text to look at, e.g. `hellogpt inspect "Elizabeth"`.')
    if len(ids) > max_seq_len:
        raise UserError(
            f"The prompt is {len(ids)} tokens long, but this model sees at most {max_seq_len} tokens "
            f"(its context length). Shorten the prompt to fewer than {max_seq_len} tokens."
        )
    return ids


@torch.no_grad()
def inspect(model, tokenizer, ids: list[int]) -> Inspection:
    """Run the prompt through the model once, keeping the attention weights and the residual streams."""
    device = next(model.parameters()).device
    idx = torch.tensor([ids], device=device)  # (1, T)
    residuals = []  # the residual stream after each block, L x (1, T, C)
    hooks = [block.register_forward_hook(lambda _m, _in, out: residuals.append(out[0])) for block in model.blocks]
    try:
        logits, _, weights = model(idx, return_weights=True)  # (1, T, V), L x (1, H, T, T)
    finally:
        for hook in hooks:
            hook.remove()
    # The logit lens: read each block's output as if it were the last, through the final LayerNorm and head.
    last = torch.stack([r[0, -1] for r in residuals])  # (L, C)
    lens_logits = model.head(model.ln_f(last))  # (L, V)
    return Inspection(
        tokenizer=tokenizer,
        ids=ids,
        logits=logits[0, -1].float().cpu(),
        attention=[w[0].float().cpu() for w in weights],
        lens_logits=lens_logits.float().cpu(),
    )


def most_frequent(train_tokens, vocab_size: int, n: int, skip: int | None) -> list[int]:
    """The n most frequent token ids of the training tokens, most frequent first (`skip`: the end-of-text id)."""
    counts = np.bincount(np.asarray(train_tokens), minlength=vocab_size)
    if skip is not None:
        counts[skip] = 0  # a separator between books, not a word
    order = np.argsort(-counts, kind="stable")[:n]
    return [int(i) for i in order if counts[i] > 0]


def embedding_pca(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens' embedding vectors projected onto their first two principal components.

    Returns (N, 2) coordinates and the fraction of the variance each of the two explains."""
    emb = model.tok_emb.weight.detach()[ids].float().cpu()  # (N, C)
    centred = emb - emb.mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # exact and deterministic; N x C is small
    return centred @ vh[:2].T, (s**2 / (s**2).sum())[:2]  # (N, 2), (2,)


def training_tokens(home: Home, data, tokenizer, ckpt: dict):
    """(the training tokens, a note on where they come from), or (None, why the embedding view is skipped)."""
    val_fraction = Config.from_dict(ckpt.get("config") or {}).val_fraction
    try:
        path = data_path(home, data)
        tokens = prepare_tokens(home, path, tokenizer, val_fraction)
    except UserError as e:
        return None, ("Skipped: this view picks the most frequent tokens of the training data, "
                      f"which is not available. {e}")
    note = f"Token counts from the training split of {path}."
    trained_on = ckpt.get("data_fingerprint")
    if trained_on and trained_on != tokens.fingerprint:
        note += " These books differ from the ones the model was trained on."
    return tokens.train, note
