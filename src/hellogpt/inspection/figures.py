"""The figures of `hellogpt inspect` and the index.html that shows them all.

matplotlib is imported only here and only when a report is drawn; figures are drawn
on the Agg backend directly (no pyplot, no window, no global state).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import torch

from hellogpt.inspection.analysis import LENS_TOP, Inspection
from hellogpt.model.checkpoint import Located

MAX_TICK_LABELS = 40  # beyond this many tokens, heatmaps label every n-th one so that labels never overlap
LABEL_CHARS = 12  # longer token labels are cut to this many characters


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _token_ticks(labels: list[str]) -> tuple[list[int], list[str]]:
    """Tick positions and labels: every token up to MAX_TICK_LABELS, every n-th beyond."""
    step = math.ceil(len(labels) / MAX_TICK_LABELS)
    positions = list(range(0, len(labels), step))
    return positions, [_short(labels[p]) for p in positions]


def plot_attention(path: Path, weights: torch.Tensor, labels: list[str], layer: int) -> None:
    """One layer's heads side by side: weights (H, T, T), row t = token t's attention over tokens 0..t."""
    from matplotlib import colormaps

    H, T, _ = weights.shape
    cols = min(H, 4)
    rows = math.ceil(H / cols)
    panel = min(8.0, max(2.6, 1.2 + 0.16 * min(T, MAX_TICK_LABELS)))  # inches per heatmap
    fontsize = 8 if T <= 20 else 7
    fig = _figure(cols * panel + 1.0, rows * (panel + 1.0) + 0.6)  # + room for titles and rotated labels
    axes = fig.subplots(rows, cols, squeeze=False).flat
    cmap = colormaps["viridis"].with_extremes(bad="0.88")  # grey: a future token, never looked at
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    positions, ticks = _token_ticks(labels)
    used = []
    for h, ax in enumerate(axes):
        if h >= H:
            ax.set_axis_off()
            continue
        used.append(ax)
        image = ax.imshow(np.ma.masked_array(weights[h].numpy(), mask=future), cmap=cmap, vmin=0, vmax=1,
                          aspect="auto")  # fill the panel: the layout, not the cells, decides its shape
        ax.set_title(f"head {h + 1}")
        ax.set_xticks(positions, ticks, rotation=90, fontsize=fontsize)
        ax.set_yticks(positions, ticks if h % cols == 0 else [], fontsize=fontsize)
        ax.set_xlabel("attends to (itself or an earlier token)")
        if h % cols == 0:
            ax.set_ylabel("token")
    fig.colorbar(image, ax=used, label="attention weight", shrink=0.9)
    fig.suptitle(f"Layer {layer} attention: each row is a token, its colours how much it looks at each column")
    fig.savefig(path, dpi=100)


def plot_next_token(path: Path, ins: Inspection, k: int) -> None:
    top = ins.top(k)
    fig = _figure(7.5, 1.4 + 0.32 * len(top))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(top)), [p for _, p in top], color="tab:blue")
    ax.bar_label(bars, labels=[f"{p:.1%}" for _, p in top], padding=3, fontsize=8)
    ax.set_yticks(range(len(top)), [_short(ins.label(i)) for i, _ in top])
    ax.invert_yaxis()  # the likeliest on top
    ax.set_xlim(0, min(1.0, top[0][1] * 1.2))
    ax.set_xlabel("probability")
    ax.set_ylabel("next token")
    ax.set_title(f"The {len(top)} likeliest next tokens "
                 f"(entropy of all {ins.probs.numel()}: {ins.entropy_bits:.2f} bits)")
    fig.savefig(path, dpi=100)


def plot_logit_lens(path: Path, ins: Inspection) -> None:
    """A grid: row = after which block, column = rank, cell = the token and its probability."""
    L = ins.lens_probs.size(0)
    tops = [ins.top(LENS_TOP, probs) for probs in ins.lens_probs]
    fig = _figure(1.5 * LENS_TOP + 2.0, 0.6 * L + 1.6)
    ax = fig.add_subplot()
    image = ax.imshow([[p for _, p in row] for row in tops], cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for block, row in enumerate(tops):
        for rank, (i, p) in enumerate(row):
            ax.text(rank, block, f"{_short(ins.label(i))}\n{p:.0%}", ha="center", va="center", fontsize=10,
                    color="white" if p > 0.5 else "black")
    ax.set_xticks(range(LENS_TOP), [f"#{r + 1}" for r in range(LENS_TOP)])
    ax.set_yticks(range(L), [str(b + 1) for b in range(L)])
    ax.set_xlabel("rank of the guess")
    ax.set_ylabel("after block")
    fig.colorbar(image, ax=ax, label="probability")
    ax.set_title("Logit lens: the next-token guess forming block by block")
    fig.savefig(path, dpi=100)


def plot_embeddings(path: Path, ins: Inspection, ids: list[int], coords: torch.Tensor, explained) -> None:
    """A labelled scatter of token embeddings in 2-D; the prompt's tokens in red, labelled first."""
    fig = _figure(12, 9)
    ax = fig.add_subplot()
    in_prompt = [i in set(ins.ids) for i in ids]
    x, y = coords[:, 0].numpy(), coords[:, 1].numpy()
    ax.scatter(x, y, s=10, c=["tab:red" if p else "tab:blue" for p in in_prompt], alpha=0.7)
    ax.set_xlabel(f"principal component 1 ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"principal component 2 ({explained[1]:.0%} of the variance)")
    ax.set_title(f"Token embeddings projected to 2-D (PCA): {len(ids)} tokens, the training data's most "
                 "frequent and, in red, the prompt's")
    fig.canvas.draw()  # fix the layout, so that label boxes are measured where they end up
    renderer = fig.canvas.get_renderer()
    placed = []
    order = sorted(range(len(ids)), key=lambda n: not in_prompt[n])  # stable: then most frequent first
    for n in order:
        text = ax.annotate(_short(ins.label(ids[n])), (x[n], y[n]), xytext=(3, 2), textcoords="offset points",
                           fontsize=7, color="tab:red" if in_prompt[n] else "black")
        text.set_in_layout(False)
        box = text.get_window_extent(renderer)
        if any(box.overlaps(other) for other in placed):
            text.remove()  # a crowded spot keeps its more frequent label
        else:
            placed.append(box)
    fig.savefig(path, dpi=100)


# --- index.html -----------------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;line-height:1.4}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
.tok{font-family:monospace;font-size:1.2em;padding:2px 1px;white-space:pre}
.t0{background:#bfe8f0}.t1{background:#fbeaa0}
table{border-collapse:collapse;font-family:monospace}td,th{padding:1px 8px;text-align:left}
.prompt{background:#f4f4f4;padding:.5em;white-space:pre-wrap}"""


def _tokens_html(ins: Inspection) -> str:
    spans = "".join(
        f'<span class="tok t{pos % 2}" title="id {i}">{html.escape(label)}</span>'
        for pos, (i, label) in enumerate(zip(ins.ids, ins.labels))
    )
    rows = "".join(
        f"<tr><td>{pos}</td><td>{i}</td><td>{html.escape(label)}</td>"
        f"<td>{ins.tokenizer.token_bytes(i).hex(' ')}</td></tr>"
        for pos, (i, label) in enumerate(zip(ins.ids, ins.labels))
    )
    return (f"<p>{spans}</p><p>␣ is a space, ↵ a newline.</p>"
            f"<table><tr><th>#</th><th>id</th><th>token</th><th>bytes</th></tr>{rows}</table>")


def _img(name: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(name)}">'


def write_report(folder: Path, ins: Inspection, prompt: str, where: Located, top_k: int,
                 pca: tuple[list[int], torch.Tensor, torch.Tensor] | None, pca_note: str) -> None:
    """Draw every figure into `folder` and write index.html, which shows them all.

    pca: the token ids, their (N, 2) coordinates and the variance explained (see embedding_pca), or None."""
    plot_next_token(folder / "next_token.png", ins, top_k)
    attention = []
    for layer, weights in enumerate(ins.attention, start=1):
        plot_attention(folder / f"attention_layer{layer}.png", weights, ins.labels, layer)
        attention.append(_img(f"attention_layer{layer}.png"))
    plot_logit_lens(folder / "logit_lens.png", ins)
    if pca is not None:
        plot_embeddings(folder / "embeddings.png", ins, *pca)

    sections = [
        ("1. Tokenization", "The model never sees letters, only these tokens (hover for the id).", _tokens_html(ins)),
        ("2. Next token", "The model's probability for each possible next token; the entropy says how unsure "
         "it is (0 bits: certain).", _img("next_token.png")),
        ("3. Attention", "One figure per layer, one heatmap per head. Row t shows how token t divides its "
         "attention (summing to 1) over itself and the tokens before it; grey cells are future tokens, which it "
         "may not see. The bottom row is what the last token, the one predicting the next, looks at.",
         "".join(attention)),
        ("4. Logit lens", "The residual stream of the last token after each block, read through the final "
         "LayerNorm and the head as if the model ended there: how the prediction forms block by block.",
         _img("logit_lens.png")),
        ("5. Embeddings", "Each token's embedding vector, projected onto the two directions in which the "
         "embeddings vary most (PCA). Tokens the model treats alike tend to sit close together. " + pca_note,
         _img("embeddings.png") if pca is not None else ""),
    ]
    body = "".join(f"<h2>{html.escape(h)}</h2><p>{html.escape(text)}</p>{content}" for h, text, content in sections)
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>HelloGPT inspect: {html.escape(prompt)}</title>'
            f"<style>{_CSS}</style></head><body><h1>HelloGPT inspect</h1>"
            f"<p>Model <b>{html.escape(where.model_name)}</b>, serial {where.serial}. Prompt:</p>"
            f'<p class="prompt">{html.escape(prompt)}</p>{body}</body></html>\n')
    (folder / "index.html").write_text(page, encoding="utf-8")
