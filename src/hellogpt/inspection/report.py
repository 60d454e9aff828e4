"""`hellogpt inspect`'s work below the terminal: load the model, look at a prompt, write the report folder.

A report is a new folder of figures and an index.html, under artifacts/inspect/<model_name>/<time
stamp>/ or where --out says. It is drawn in a hidden folder and renamed into place whole; a report
is never overwritten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hellogpt.core.errors import UserError
from hellogpt.core.fileio import publish_folder, temporary_folder
from hellogpt.core.paths import Home
from hellogpt.inspection.analysis import (
    PCA_TOKENS,
    Inspection,
    embedding_pca,
    encode_prompt,
    inspect,
    most_frequent,
    training_tokens,
)
from hellogpt.inspection.figures import write_report
from hellogpt.model.checkpoint import Located, load_for_inference

_NEVER_OVERWRITTEN = ("Reports are never overwritten: give another --out DIR, or leave --out out "
                      "for a new time-stamped folder.")


@dataclass
class Look:
    """A prompt looked at: the five views' data, which checkpoint, and the embedding map (or why not)."""

    prompt: str
    inspection: Inspection
    where: Located
    pca: tuple | None  # (token ids, (N, 2) coordinates, variance explained), see analysis.embedding_pca
    pca_note: str


def check_out_dir(out: Path) -> None:
    """Refuse an --out folder that would overwrite something (before any work is done)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty folder. {_NEVER_OVERWRITTEN}")


def look(home: Home, model_name: str, prompt: str, serial: int | None = None, data=None) -> Look:
    """One forward pass over `prompt` through the model's checkpoint, and its embedding map."""
    model, tokenizer, ckpt, where = load_for_inference(home, model_name, serial)
    ids = encode_prompt(tokenizer, prompt, model.config.max_seq_len)
    ins = inspect(model, tokenizer, ids)
    train, note = training_tokens(home, data, tokenizer, ckpt)
    pca = None
    if train is not None:
        shown = most_frequent(train, tokenizer.vocab_size, PCA_TOKENS, tokenizer.eot_id)
        shown += [i for i in dict.fromkeys(ids) if i not in shown]  # the prompt's tokens, to find them on the map
        pca = (shown, *embedding_pca(model, shown))
    return Look(prompt, ins, where, pca, note)


def save_report(home: Home, seen: Look, top_k: int, out: Path | None = None) -> Path:
    """Draw the figures and index.html into a new folder (`out`, else a time-stamped one); its path."""
    base = Path(out.parent if out else home.inspect_dir(seen.where.model_name))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = [out] if out is not None else [base / stamp, *(base / f"{stamp}-{n}" for n in range(2, 100))]
    with temporary_folder(base / "report") as tmp:
        write_report(tmp, seen.inspection, seen.prompt, seen.where, top_k, seen.pca, seen.pca_note)
        report = publish_folder(tmp, names)
    if report is None:
        raise UserError(f"{names[-1]} already exists. {_NEVER_OVERWRITTEN}")
    return report
