"""`hellogpt inspect "PROMPT"`: look inside the model on a prompt you type.

Five views, each printed in the terminal and drawn into one report folder
(figures plus an index.html that shows them all, see inspection_figures.py):

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
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.bar import Bar
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hellogpt.errors import UserError
from hellogpt.fileio import fsync_dir, fsync_file
from hellogpt.tokenizer import Tokenizer

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


def training_tokens(home, data, tokenizer, ckpt: dict):
    """(the training tokens, a note on where they come from), or (None, why the embedding view is skipped)."""
    from hellogpt.config import Config
    from hellogpt.corpus import data_path
    from hellogpt.dataloader import prepare_tokens

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


# --- the terminal --------------------------------------------------------------------------------------


def print_tokens(console: Console, ins: Inspection) -> None:
    console.print(Text(f"1. Tokenization: {len(ins.ids)} tokens (␣ is a space, ↵ a newline)", style="bold"))
    line = Text()
    for pos, label in enumerate(ins.labels):
        line.append(label, style="black on cyan" if pos % 2 == 0 else "black on yellow")  # boundaries show
    console.print(line)
    table = Table("#", "id", "token", "bytes", box=None, padding=(0, 1))
    for pos, (i, label) in enumerate(zip(ins.ids, ins.labels)):
        table.add_row(str(pos), str(i), Text(label), ins.tokenizer.token_bytes(i).hex(" "))
    console.print(table)


def print_next_token(console: Console, ins: Inspection, k: int) -> None:
    console.print(Text("\n2. Next token: the likeliest continuations", style="bold"))
    table = Table("rank", "token", "probability", "", box=None, padding=(0, 1))
    for rank, (i, p) in enumerate(ins.top(k), start=1):
        table.add_row(str(rank), Text(ins.label(i)), f"{p:7.2%}", Bar(size=1.0, begin=0.0, end=p, width=40))
    console.print(table)
    h = ins.entropy_bits
    console.print(f"entropy {h:.2f} bits: as unsure as a fair choice among {2**h:.1f} tokens")


def print_attention_summary(console: Console, ins: Inspection) -> None:
    console.print(Text(f"\n3. Attention: which token the last one ({ins.labels[-1]}) looks at most", style="bold"))
    table = Table("layer", "head", "looks most at", "position", "weight", box=None, padding=(0, 1))
    last = len(ins.ids) - 1
    for layer, weights in enumerate(ins.attention, start=1):
        for head, row in enumerate(weights[:, -1], start=1):  # row: (T,) the last token's weights
            pos = int(row.argmax())
            table.add_row(str(layer), str(head), Text(ins.labels[pos] + (" (itself)" if pos == last else "")),
                          str(pos), f"{row[pos]:.2f}")
    console.print(table)


def print_logit_lens(console: Console, ins: Inspection) -> None:
    console.print(Text("\n4. Logit lens: the next-token guess after each block", style="bold"))
    table = Table("after block", *[f"#{r}" for r in range(1, LENS_TOP + 1)], box=None, padding=(0, 1))
    for block, probs in enumerate(ins.lens_probs, start=1):
        table.add_row(str(block), *[Text(f"{ins.label(i)} {p:.0%}") for i, p in ins.top(LENS_TOP, probs)])
    console.print(table)


# --- the report folder ---------------------------------------------------------------------------------


_NEVER_OVERWRITTEN = ("Reports are never overwritten: give another --out DIR, or leave --out out "
                      "for a new time-stamped folder.")


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty folder. {_NEVER_OVERWRITTEN}")


def _publish(tmp: Path, out: Path | None, base: Path) -> Path:
    """Give the finished report folder its name in one atomic rename that never replaces a report.

    Renaming a folder onto an existing non-empty one fails, so a name that is taken stays as it
    is; without --out the next free `<time stamp>-N` is tried. A report is there whole or not at all."""
    for path in tmp.iterdir():
        fsync_file(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = [out] if out is not None else [base / stamp, *(base / f"{stamp}-{n}" for n in range(2, 100))]
    for target in names:
        try:
            os.rename(tmp, target)
        except OSError:
            if target.exists():
                continue  # taken, perhaps by a report made at the same moment
            raise
        fsync_dir(target.parent)
        return target
    raise UserError(f"{names[-1]} already exists. {_NEVER_OVERWRITTEN}")


def run_inspect(home, model_name: str, prompt: str, serial: int | None = None, top_k: int = 10,
                out_dir=None, data=None, console: Console | None = None) -> Path:
    """Print the five views for `prompt` and write the report folder; return the folder's path."""
    from hellogpt.checkpoint_manager import load_for_inference
    from hellogpt.inspection_figures import write_report

    console = console or Console()
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: show at least 1 token.")
    out = Path(out_dir).expanduser().resolve() if out_dir else None
    if out is not None:
        _check_out_dir(out)  # fail before the work, not after
    model, tokenizer, ckpt, where = load_for_inference(home, model_name, serial)
    ids = encode_prompt(tokenizer, prompt, model.config.max_seq_len)

    ins = inspect(model, tokenizer, ids)
    console.print(f"Model '{where.model_name}', serial {where.serial}: {where.path}\n", markup=False,
                  soft_wrap=True)
    print_tokens(console, ins)
    print_next_token(console, ins, top_k)
    print_attention_summary(console, ins)
    print_logit_lens(console, ins)

    console.print(Text("\n5. Embeddings: where the most frequent tokens sit", style="bold"))
    train, note = training_tokens(home, data, tokenizer, ckpt)
    pca = None
    if train is not None:
        shown = most_frequent(train, tokenizer.vocab_size, PCA_TOKENS, tokenizer.eot_id)
        shown += [i for i in dict.fromkeys(ids) if i not in shown]  # the prompt's tokens, to find them on the map
        pca = (shown, *embedding_pca(model, shown))
    console.print(note, markup=False, soft_wrap=True)

    base = Path(out.parent if out else home.inspect_dir(where.model_name))
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-inspect-{os.getpid()}-{os.urandom(4).hex()}"
    tmp.mkdir()
    try:
        with console.status("Drawing the figures..."):
            write_report(tmp, ins, prompt, where, top_k, pca, note)
        report = _publish(tmp, out, base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless something failed half-way
    console.print(f"\nFigures and index.html in {report}\nOpen {report / 'index.html'} in a browser to see them all.",
                  markup=False, soft_wrap=True)  # a path cut by a line break cannot be copied
    return report


def run_cli(args, home) -> int:
    from hellogpt.config import model_name_from_args

    run_inspect(home, model_name_from_args(args), args.prompt, serial=args.serial, top_k=args.top_k,
                out_dir=args.out, data=args.data)
    return 0
