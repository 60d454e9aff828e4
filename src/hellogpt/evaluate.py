"""How well a model predicts text it did not train on: loss, perplexity, bits per byte.

The validation tokens are cut into every non-overlapping window of `seq_len` targets
(window i reads tokens i*T .. i*T+T-1 and predicts i*T+1 .. i*T+T). Over all windows:

    loss           = sum of the target tokens' negative log-likelihood (nats) / number of targets
    perplexity     = exp(loss): the model is as unsure as a uniform choice among that many tokens
    bits per byte  = the same sum / (ln 2 x the UTF-8 bytes of text those target tokens stand for,
                     without the spaces the tokenizer writes: Tokenizer.text_byte_counts)

Bits per byte does not depend on the tokenizer, so models with different vocabularies compare.

`hellogpt eval [--model-name NAME] [--serial N] [--data PATH] [--all] [--json]` prints them
for any checkpoint on any books, with the split rule the model was trained with.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hellogpt.dataloader import num_windows, sequential_batches
from hellogpt.device import autocast


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
            _, loss = model(x, y, return_logits=False)  # mean over the B x T targets, no (B, T, V) logits held
        nll += loss.item() * y.numel()
        n_tokens += y.numel()
        n_bytes += int(y_bytes.sum())
    model.train(was_training)
    return EvalResult(nll, n_tokens, n_bytes)


def run_cli(args, home) -> int:
    """`hellogpt eval`: loss, perplexity and bits per byte of a checkpoint on the validation split
    (the last val_fraction of each book, as in training) or, with --all, the whole text."""
    from rich.console import Console
    from rich.table import Table

    from hellogpt.checkpoint_manager import load_for_inference
    from hellogpt.config import Config, model_name_from_args
    from hellogpt.corpus import data_path
    from hellogpt.dataloader import prepare_tokens
    from hellogpt.device import pick_device, setup_device
    from hellogpt.errors import UserError

    device = pick_device()
    setup_device(device)
    name = model_name_from_args(args)
    model, tokenizer, ckpt, where = load_for_inference(home, name, args.serial, device)
    config = Config.from_dict(ckpt.get("config", {}))
    books = data_path(home, args.data)
    show_progress = not args.json
    if args.all:  # the whole text: a split with nothing held out
        tokens, split = prepare_tokens(home, books, tokenizer, 0.0, show_progress).train, "all"
    else:
        tokens, split = prepare_tokens(home, books, tokenizer, config.val_fraction, show_progress).val, "validation"
    T = model.config.max_seq_len
    if num_windows(tokens, T) == 0:
        raise UserError(f"The {split} text of {books} holds {len(tokens):,} tokens, fewer than one window of "
                        f"{T + 1} tokens. Evaluate on more text (--data), or use --all for the whole text.")
    result = evaluate(model, tokens, tokenizer, T, device=device)
    report = {"model_name": name, "serial": where.serial, "checkpoint": str(where.path), "data": str(books),
              "split": split, **result.to_dict()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title=f"{name} serial {where.serial} on the {split} text of {books}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("loss (nats per token)", f"{result.loss:.4f}")
    table.add_row("perplexity", f"{result.perplexity:.2f}")
    table.add_row("bits per byte", f"{result.bits_per_byte:.4f}")
    table.add_row("target tokens", f"{result.tokens:,}")
    table.add_row("bytes", f"{result.bytes:,}")
    Console().print(table)
    return 0
