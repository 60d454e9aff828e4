"""`hellogpt inspect`: the numbers it shows are the model's own, and the report it writes is whole."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from hellogpt.app.commands import show_inspection
from hellogpt.app.inspect_views import print_attention_summary, print_logit_lens, print_next_token, print_tokens
from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.inspection import report as inspection_report
from hellogpt.inspection.analysis import embedding_pca, encode_prompt, inspect, most_frequent, visible
from hellogpt.inspection.report import look, save_report
from hellogpt.model.checkpoint import load_for_inference, save_checkpoint
from hellogpt.model.gpt import GPT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODEL = "trained"


@pytest.fixture(scope="module")
def tiny(tiny_home, tmp_path_factory):
    """A copy of tiny_home (see conftest.py) with model 'trained': its 'tiny' trained a few steps on its
    book, so that attention is not uniform. Returns (home, model, tokenizer)."""
    home = Home(tmp_path_factory.mktemp("inspect") / "home")
    shutil.copytree(tiny_home.root, home.root)
    model, tokenizer, ckpt, _ = load_for_inference(home, "tiny")
    tokens = torch.tensor(tokenizer.encode((home.data_dir / "pride.txt").read_text(encoding="utf-8")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains ten times faster without threads waiting on each other
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    T = model.config.max_seq_len
    for _ in range(30):
        starts = torch.randint(len(tokens) - T - 1, (16,))
        window = torch.stack([tokens[s : s + T + 1] for s in starts])
        _, loss = model(window[:, :-1], window[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    save_checkpoint(home.model_dir(MODEL), {**ckpt, "model": model.state_dict(), "step": 30})
    return home, model.eval(), tokenizer


def hellogpt(run_hellogpt, home: Home, *args: str):
    return run_hellogpt("--home", home.root, *args, timeout=120)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


# --- the numbers ---------------------------------------------------------------------------------------


def test_attention_rows_are_causal_distributions(tiny):
    _, model, tokenizer = tiny
    ins = inspect(model, tokenizer, tokenizer.encode("Elizabeth looked at Mr. Darcy and smiled."))
    T = len(ins.ids)
    assert len(ins.attention) == model.config.n_layers
    for weights in ins.attention:
        assert weights.shape == (model.config.n_heads, T, T)
        assert torch.allclose(weights.sum(dim=-1), torch.ones(model.config.n_heads, T), atol=1e-5)
        assert torch.all(weights.triu(diagonal=1) == 0)  # nobody looks at the future
        assert weights.std() > 0.01  # and the trained heads are not uniform


def test_attention_weights_give_the_fast_attention_output(tiny):
    """weights @ v, projected, equals what scaled_dot_product_attention computes, in every layer."""
    _, model, tokenizer = tiny
    inputs = []  # what each attention module received (the LayerNormed residual stream), (1, T, C)
    hooks = [b.attn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for b in model.blocks]
    try:
        ins = inspect(model, tokenizer, tokenizer.encode("It is a truth universally acknowledged"))
    finally:
        for hook in hooks:
            hook.remove()
    H = model.config.n_heads
    with torch.no_grad():
        for block, x, weights in zip(model.blocks, inputs, ins.attention):
            B, T, C = x.shape
            v = block.attn.qkv(x).split(C, dim=2)[2].view(B, T, H, C // H).transpose(1, 2)  # (1, H, T, D)
            from_weights = block.attn.proj((weights[None] @ v).transpose(1, 2).reshape(B, T, C))
            fast, no_weights = block.attn(x)  # the default path: scaled_dot_product_attention
            assert no_weights is None
            assert torch.allclose(from_weights, fast, atol=1e-5)


def test_logit_lens_after_the_last_block_is_the_model_output(tiny):
    _, model, tokenizer = tiny
    ids = tokenizer.encode("Mr. Bennet was among the earliest")
    ins = inspect(model, tokenizer, ids)
    assert ins.lens_logits.shape == (model.config.n_layers, tokenizer.vocab_size)
    assert torch.allclose(ins.lens_logits[-1], ins.logits, atol=1e-5)  # same numbers, other matmul batching
    with torch.no_grad():
        fast_logits, _ = model(torch.tensor([ids]))
    assert torch.allclose(ins.lens_logits[-1], fast_logits[0, -1], atol=1e-5)
    assert not torch.allclose(ins.lens_logits[0], ins.logits, atol=1e-3)  # block 1 alone guesses otherwise


def test_probabilities_shown_are_the_softmax_of_the_model_logits(tiny):
    _, model, tokenizer = tiny
    ids = tokenizer.encode("Elizabeth")
    ins = inspect(model, tokenizer, ids)
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    reference = torch.softmax(logits[0, -1], dim=-1)
    top = ins.top(10)
    assert [i for i, _ in top] == reference.topk(10).indices.tolist()
    assert all(abs(p - reference[i].item()) < 1e-5 for i, p in top)
    assert sum(p for _, p in top) <= 1 + 1e-6
    assert all(p1 >= p2 for (_, p1), (_, p2) in zip(top, top[1:]))
    bits = -(reference * reference.log2()).sum().item()
    assert ins.entropy_bits == pytest.approx(bits, abs=1e-4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(min_size=1, max_size=30))
def test_any_prompt_that_fits_gives_distributions(tiny, prompt):
    _, model, tokenizer = tiny
    ids = tokenizer.encode(prompt)
    if len(ids) > model.config.max_seq_len:
        with pytest.raises(UserError, match="context length"):
            encode_prompt(tokenizer, prompt, model.config.max_seq_len)
        return
    ins = inspect(model, tokenizer, encode_prompt(tokenizer, prompt, model.config.max_seq_len))
    assert len(ins.labels) == len(ids) and all(ins.labels)
    print_all(ins)  # whatever the prompt holds (markup-like brackets, control characters), printing copes
    assert ins.probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    for weights in ins.attention:
        assert torch.allclose(weights.sum(dim=-1), torch.ones(weights.shape[:2]), atol=1e-5)


def print_all(ins, k: int = 5) -> str:
    console = quiet()
    print_tokens(console, ins)
    print_next_token(console, ins, k)
    print_attention_summary(console, ins)
    print_logit_lens(console, ins)
    return console.file.getvalue()


def test_terminal_shows_tokens_literally(tiny):
    _, model, tokenizer = tiny
    ins = inspect(model, tokenizer, tokenizer.encode("[bold]Jane[/] said"))
    shown = print_all(ins)
    assert "".join(ins.labels) == "[bold]Jane[/]␣said"
    assert "[bold]Jane[/]␣said" in shown  # the coloured line of tokens, not taken for rich markup


def test_visible_draws_whitespace_and_partial_characters():
    assert visible(b" the") == "␣the"
    assert visible(b"\n\n") == "↵↵"
    assert visible(b"\t") == "⇥"
    assert visible("é".encode()[:1]) == "\\xc3"  # half of a two-byte character
    assert visible(b"\x07") == "\\x07"


def test_most_frequent_counts_tokens_and_skips_the_separator():
    tokens = [5, 5, 5, 2, 2, 9, 9, 9, 9, 1, 0]
    assert most_frequent(tokens, vocab_size=12, n=3, skip=9) == [5, 2, 0]
    assert most_frequent(tokens, vocab_size=12, n=10, skip=None) == [9, 5, 2, 0, 1]  # never unseen tokens


def test_embedding_pca_keeps_a_plane_exactly(tiny):
    """Embeddings that lie on a plane keep their pairwise distances in the 2-D projection."""
    _, model, _ = tiny
    model = GPT(model.config)
    torch.manual_seed(1)
    ids = list(range(50))
    plane = torch.linalg.qr(torch.randn(model.config.d_model, 2)).Q.T  # (2, C) orthonormal
    points = torch.randn(50, 2) * torch.tensor([3.0, 1.0])
    with torch.no_grad():
        model.tok_emb.weight[ids] = points @ plane + 0.5
    coords, explained = embedding_pca(model, ids)
    assert coords.shape == (50, 2)
    exact = "donot_use_mm_for_euclid_dist"
    distances = [torch.cdist(p, p, compute_mode=exact) for p in (coords, points)]
    assert torch.allclose(*distances, atol=1e-4)
    assert explained.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert explained[0] > explained[1]


# --- what a user does ----------------------------------------------------------------------------------


def report_dirs(home: Home) -> list[Path]:
    return sorted(p for p in home.inspect_dir(MODEL).iterdir() if not p.name.startswith("."))


@pytest.mark.smoke
@pytest.mark.integration
def test_cli_writes_a_whole_report_and_never_overwrites_one(tiny, run_hellogpt):
    home, model, _ = tiny
    first = hellogpt(run_hellogpt, home, "inspect", "Elizabeth", "--model-name", MODEL, "--top-k", "5")
    assert first.returncode == 0, first.stderr
    for heading in ("1. Tokenization", "2. Next token", "3. Attention", "4. Logit lens", "5. Embeddings"):
        assert heading in first.stdout
    assert "entropy" in first.stdout and "bits" in first.stdout
    (report,) = report_dirs(home)
    assert f"Figures and index.html in {report}\n" in first.stdout

    pngs = sorted(report.glob("*.png"))
    expected = {f"attention_layer{n}.png" for n in range(1, model.config.n_layers + 1)}
    expected |= {"next_token.png", "logit_lens.png", "embeddings.png"}
    assert {p.name for p in pngs} == expected
    for png in pngs:
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_SIGNATURE
    page = (report / "index.html").read_text(encoding="utf-8")
    assert set(re.findall(r'<img src="([^"]+)"', page)) == expected
    assert "Elizabeth" in page

    before = {p.name: p.read_bytes() for p in report.iterdir()}
    second = show_inspection(home, MODEL, "<b>Elizabeth</b> & Jane", console=quiet())
    assert report_dirs(home) == [report, second]
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before  # the first report is untouched
    page = (second / "index.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;Elizabeth&lt;/b&gt; &amp; Jane" in page and "<b>Elizabeth</b>" not in page


@pytest.mark.integration
@pytest.mark.parametrize("args, message", [
    (["inspect", "Elizabeth", "--model-name", "nobody"], "Model 'nobody' has no checkpoint"),
    (["inspect", "", "--model-name", MODEL], "The prompt is empty"),
    (["inspect", "Elizabeth " * 40, "--model-name", MODEL], "context length"),
])
def test_user_errors_give_one_clear_message(tiny, run_hellogpt, args, message):
    home, _, _ = tiny
    result = hellogpt(run_hellogpt, home, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_reports_made_in_the_same_second_get_their_own_folders(tiny, tmp_path, monkeypatch):
    home = Home(tmp_path / "home")
    shutil.copytree(tiny[0].root, home.root)
    earlier = set(home.inspect_dir(MODEL).iterdir()) if home.inspect_dir(MODEL).is_dir() else set()
    monkeypatch.setattr(inspection_report.time, "strftime", lambda _format: "20250101-120000")
    made = [save_report(home, look(home, MODEL, prompt), top_k=3) for prompt in ("Jane", "Lydia", "Kitty")]
    assert [p.name for p in made] == ["20250101-120000", "20250101-120000-2", "20250101-120000-3"]
    assert all(p.parent == home.inspect_dir(MODEL) for p in made)
    assert [prompt in (p / "index.html").read_text(encoding="utf-8") for p, prompt in
            zip(made, ("Jane", "Lydia", "Kitty"))] == [True] * 3
    assert sorted(set(home.inspect_dir(MODEL).iterdir()) - earlier) == made  # and no temporary folder left


@pytest.mark.integration
def test_out_dir_is_used_once_and_never_overwritten(tiny, tmp_path):
    home, _, _ = tiny
    out = tmp_path / "report"
    assert show_inspection(home, MODEL, "Jane", out_dir=out, console=quiet()) == out
    assert (out / "index.html").is_file()
    before = sorted(out.iterdir())
    with pytest.raises(UserError, match="never overwritten"):
        show_inspection(home, MODEL, "Jane", out_dir=out, console=quiet())
    assert sorted(out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary folder left behind


@pytest.mark.integration
def test_without_books_the_embedding_view_is_skipped_with_a_note(tiny, tmp_path):
    home, _, _ = tiny
    console = quiet()
    report = show_inspection(home, MODEL, "Jane", data=tmp_path / "no-books", out_dir=tmp_path / "r", console=console)
    assert "Skipped" in console.file.getvalue()
    assert not (report / "embeddings.png").exists()
    assert "Skipped" in (report / "index.html").read_text(encoding="utf-8")


@pytest.mark.integration
def test_inspect_command_in_the_console_app(tiny):
    home, _, _ = tiny
    main = Path(__file__).resolve().parents[2] / "main.py"
    answers = "/inspect\n/inspect Elizabeth\nX\n"
    r = subprocess.run([sys.executable, str(main), "--home", str(home.root), "--model-name", MODEL], input=answers,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "error: The prompt is empty" in r.stdout  # a mistake at the prompt does not end the session
    assert "4. Logit lens" in r.stdout
    report = re.search(r"Figures and index.html in (\S+)", r.stdout).group(1)
    assert (Path(report) / "index.html").is_file()
    assert r.stdout.rstrip().endswith("Bye.")
