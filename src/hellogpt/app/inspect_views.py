"""The terminal half of `hellogpt inspect`: the tokens, the next-token bars, what the last token looks at,
and the logit lens (the report folder holds the figures)."""

from __future__ import annotations

from rich.bar import Bar
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hellogpt.inspection.analysis import LENS_TOP, Inspection


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
