"""Tables and views on the terminal: the models (`info`), the books (`data info`), an evaluation
(`eval`) and the terminal half of `inspect`."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.bar import Bar
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.data.tokens import BookStats, total_stats
from hellogpt.inspection.analysis import LENS_TOP, Inspection
from hellogpt.model.checkpoint import load_checkpoint, serial_path, serials
from hellogpt.training.evaluate import EvalResult


def val_bpb(ckpt: dict) -> float | None:
    """The latest validation bits per byte in a checkpoint's metrics (the trainer records them), if any."""
    for entry in reversed(ckpt.get("metrics") or []):
        if entry.get("split") == "val" and entry.get("bits_per_byte") is not None:
            return float(entry["bits_per_byte"])
    return None


def count_params(state: dict) -> int:
    """Parameters in a state dict, a tensor shared by two names (tied embeddings) counted once."""
    unique = {t.untyped_storage().data_ptr(): t.numel() for t in state.values()}
    return sum(unique.values())


def print_models(home: Home, current: tuple[str, int] | None = None) -> int:
    """A table of every model and serial; returns how many models there are."""
    folders = sorted(p for p in home.checkpoints_dir.iterdir() if serials(p)) if home.checkpoints_dir.is_dir() else []
    if not folders:
        print(f"No trained models in {home.checkpoints_dir}. Run `python main.py` (or `hellogpt train`) to train one.")
        return 0
    table = Table(title=f"Models in {home.checkpoints_dir}")
    for column in ("model", "serial", "parameters", "size", "steps", "tokens seen", "val bpb"):
        table.add_column(column, justify="left" if column == "model" else "right")
    damaged = 0
    for folder in folders:
        for serial in serials(folder):
            path = serial_path(folder, serial)
            mark = " *" if current == (folder.name, serial) else ""
            try:
                ckpt = load_checkpoint(path)
            except UserError:
                damaged += 1
                table.add_row(folder.name + mark, str(serial), "damaged", f"{path.stat().st_size / 1e6:.1f} MB",
                              "-", "-", "-")
                continue
            bpb = val_bpb(ckpt)
            table.add_row(folder.name + mark, str(serial), f"{count_params(ckpt['model']):,}",
                          f"{path.stat().st_size / 1e6:.1f} MB", f"{ckpt.get('step', 0):,}",
                          f"{ckpt.get('tokens_seen', 0):,}", "-" if bpb is None else f"{bpb:.3f}")
    Console().print(table)
    if current:
        print("* the model in use")
    if damaged:
        print(f"{damaged} serial(s) marked damaged cannot be loaded (truncated or corrupt): delete them, or load "
              "another serial with --serial.")
    return len(folders)


def print_books(console: Console, path: Path, books: list[BookStats], val_fraction: float, tokens: bool) -> None:
    """The books' sizes per split; with tokens, their token counts too."""
    table = Table(title=f"Books in {path} (last {val_fraction:.0%} of each held out for validation)",
                  box=box.SIMPLE_HEAD)
    table.add_column("book")
    for column in ("characters", "bytes") + (("train tokens", "val tokens", "chars/token") if tokens else ()):
        table.add_column(column, justify="right")
    for row in books + [total_stats(books)]:
        cells = [row.name, f"{row.chars:,}", f"{row.bytes:,}"]
        if tokens:
            count = row.train_tokens + row.val_tokens
            cells += [f"{row.train_tokens:,}", f"{row.val_tokens:,}", f"{row.chars / max(count, 1):.2f}"]
        table.add_row(*cells, end_section=row is books[-1])
    console.print(table)


def print_eval(console: Console, title: str, result: EvalResult) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("loss (nats per token)", f"{result.loss:.4f}")
    table.add_row("perplexity", f"{result.perplexity:.2f}")
    table.add_row("bits per byte", f"{result.bits_per_byte:.4f}")
    table.add_row("target tokens", f"{result.tokens:,}")
    table.add_row("bytes", f"{result.bytes:,}")
    console.print(table)



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


