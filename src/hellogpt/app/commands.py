"""The commands of `hellogpt COMMAND`: each reads its flags, calls the layer that does the work, and
shows the outcome. Each takes (args, home) and returns an exit code."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hellogpt.app import inspect_views, reports
from hellogpt.app.progress import DownloadBars, TokenizingBar, print_summary, training_display
from hellogpt.app.setup import ensure_books, ensure_tokenizer, train_tokenizer_shown
from hellogpt.core import distributed
from hellogpt.core.device import pick_device, setup_device
from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.core.settings import Config, given_settings_from_args, model_name_from_args
from hellogpt.core.text import valid_text
from hellogpt.data.books import BUNDLED_BOOKS, add_bundled_books, check_val_fraction, data_path, find_books
from hellogpt.data.gutenberg import DEFAULT_BOOKS, download_books
from hellogpt.data.tokenizer import load_tokenizer
from hellogpt.data.tokens import BookStats, num_windows, prepare_tokens, text_stats, total_stats
from hellogpt.generation.generator import Settings, load_generator
from hellogpt.inspection.report import check_out_dir, look, save_report
from hellogpt.model.checkpoint import load_for_inference
from hellogpt.model.hf import export_hf, import_hf
from hellogpt.training.evaluate import EvalResult, evaluate
from hellogpt.training.metrics import METRICS_FILE, PLOT_FILE, plot_loss_curve, read_metrics
from hellogpt.training.trainer import train

NEXT_STEP = "Next: `hellogpt tokenizer train`, or `python main.py` for the guided way."


def data_download(args, home: Home) -> int:
    """`hellogpt data download [ID ...] [--mirror URL] [--timeout S]`."""
    with DownloadBars(Console(soft_wrap=True)) as bars:
        download_books(args.ids or list(DEFAULT_BOOKS), data_path(home, args.data), mirror=args.mirror,
                       timeout=args.timeout, progress=bars)
    print(NEXT_STEP)
    return 0


def data_bundled(args, home: Home) -> int:
    """`hellogpt data bundled`: the two books that come with HelloGPT, into data/ (no network)."""
    paths = add_bundled_books(data_path(home, args.data))
    for path, title in zip(paths, BUNDLED_BOOKS.values()):
        print(f"{path} ({title})")
    print(NEXT_STEP)
    return 0


def data_info(args, home: Home) -> int:
    """`hellogpt data info`: the books found, their size, and tokens per split."""
    console = Console(soft_wrap=True)  # long paths stay whole, for copying
    val_fraction = Config().val_fraction if args.val_fraction is None else args.val_fraction
    check_val_fraction(val_fraction)
    path = data_path(home, args.data)
    if not home.tokenizer_path.is_file():
        print_books(console, path, [text_stats(p, val_fraction) for p in find_books(path)], val_fraction,
                            tokens=False)
        console.print(f"No tokenizer yet ({home.tokenizer_path}): run `hellogpt tokenizer train` to see token counts.")
        return 0
    data = prepare_tokens(home, path, load_tokenizer(home.tokenizer_path), val_fraction, TokenizingBar(console))
    print_books(console, path, data.books, val_fraction, tokens=True)
    console.print(f"Tokens per split (with one <|endoftext|> after each document): train {len(data.train):,}, "
                  f"val {len(data.val):,}. Cached in {data.path}.")
    return 0


def tokenizer_train(args, home: Home) -> int:
    """`hellogpt tokenizer train [--data PATH] [--vocab-size N] [--val-fraction F]`."""
    defaults = Config()
    train_tokenizer_shown(home, data_path(home, args.data), args.vocab_size or defaults.vocab_size,
                          defaults.val_fraction if args.val_fraction is None else args.val_fraction)
    return 0


def train_model(args, home: Home) -> int:
    """`hellogpt train`: exit code 0 when the plan is done; 128 + the signal's number when Ctrl-C (130),
    SIGTERM (143) or SIGHUP (129) stopped it, after saving."""
    given = given_settings_from_args(args)
    config = Config(**given)
    pick_device(config.device)  # a device this machine lacks is refused before any work
    main = distributed.is_main_process()
    console = Console(soft_wrap=True, quiet=not main)
    under_torchrun = distributed.launched_by_torchrun()
    books = data_path(home, args.data) if under_torchrun or args.resume else ensure_books(home, args.data, args.yes,
                                                                                             args.mirror)
    can_ask = args.yes or (sys.stdin.isatty() and not under_torchrun)
    get_tokenizer = (lambda config, books: ensure_tokenizer(home, config, books, args.yes)) if can_ask else None
    result = train(config, home, books, resume=args.resume, given=given, reporter=training_display(console),
                   get_tokenizer=get_tokenizer)
    if main:
        print_summary(console, result)
    return 128 + result.stopped_by if result.interrupted else 0


def evaluate_model(args, home: Home) -> int:
    """`hellogpt eval`: loss, perplexity and bits per byte of a checkpoint on the validation split
    (the last val_fraction of each book, as in training) or, with --all, the whole text."""
    device = pick_device()
    setup_device(device)
    name = model_name_from_args(args)
    model, tokenizer, ckpt, where = load_for_inference(home, name, args.serial, device)
    config = Config.from_dict(ckpt.get("config", {}))
    books = data_path(home, args.data)
    console = Console(soft_wrap=True)
    bar = None if args.json else TokenizingBar(console)
    val_fraction, split = (0.0, "all") if args.all else (config.val_fraction, "validation")
    data = prepare_tokens(home, books, tokenizer, val_fraction, bar)
    tokens = data.train if args.all else data.val  # --all: a split with nothing held out
    T = model.config.max_seq_len
    if num_windows(tokens, T) == 0:
        raise UserError(f"The {split} text of {books} holds {len(tokens):,} tokens, fewer than one window of "
                        f"{T + 1} tokens. Evaluate on more text (--data), or use --all for the whole text.")
    result = evaluate(model, tokens, tokenizer, T, device=device)
    if args.json:
        print(json.dumps({"model_name": name, "serial": where.serial, "checkpoint": str(where.path),
                          "data": str(books), "split": split, **result.to_dict()}, indent=2))
    else:
        print_eval(console, f"{name} serial {where.serial} on the {split} text of {books}", result)
    return 0


def plot(args, home: Home) -> int:
    """`hellogpt plot [--model-name NAME]`: redraw loss_curve.png from metrics.jsonl."""
    name = model_name_from_args(args)
    model_dir = home.model_dir(name)
    out = plot_loss_curve(read_metrics(model_dir / METRICS_FILE), model_dir / PLOT_FILE, f"HelloGPT '{name}'")
    print(f"Wrote {out}")
    return 0


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


def settings_from_args(args) -> Settings:
    """The sampling flags the user gave; the rest keep Settings' defaults."""
    given = {name: getattr(args, name) for name in ("max_new_tokens", "temperature", "top_k", "top_p",
                                                    "repetition_penalty", "seed")}
    return Settings(stop=tuple(args.stop), **{k: v for k, v in given.items() if v is not None})


def generate(args, home: Home) -> int:
    """`hellogpt generate "PROMPT"`: the continuation on stdout, streamed; --json for a record."""
    args.prompt, args.stop = valid_text(args.prompt), [valid_text(s) for s in args.stop]
    if not args.prompt.strip():
        raise UserError("The prompt is empty: give the text to continue, e.g. `hellogpt generate \"Elizabeth\"`.")
    settings = settings_from_args(args)
    generator, _, where = load_generator(home, model_name_from_args(args), args.serial)
    if args.json:
        result = generator.generate(args.prompt, settings)
        record = {"model_name": where.model_name, "serial": where.serial, "prompt": args.prompt, **asdict(result),
                  "tokens_per_second": round(result.tokens_per_second, 1), "settings": asdict(settings)}
        print(json.dumps(record, ensure_ascii=False, indent=1))
        return 0
    out = sys.stdout
    if out.isatty():
        out.write(f"\033[1m{args.prompt}\033[0m")  # the prompt in bold, then its continuation
    try:
        for piece in generator.stream(args.prompt, settings):
            out.write(piece)
            out.flush()
    finally:
        out.write("\n")
        out.flush()
    return 0


def info(args, home: Home) -> int:
    """`hellogpt info`: models and their serials, the tokenizer, the data."""
    print(f"Home: {home.root}")
    reports.print_models(home)
    if home.tokenizer_path.is_file():
        tokenizer = load_tokenizer(home.tokenizer_path)
        print(f"Tokenizer: {home.tokenizer_path} (vocabulary {tokenizer.vocab_size:,}, fingerprint "
              f"{tokenizer.fingerprint})")
    else:
        print(f"Tokenizer: none yet at {home.tokenizer_path} (`hellogpt tokenizer train` makes one).")
    books_at = data_path(home, args.data)
    books = [books_at] if books_at.is_file() else sorted(books_at.glob("*.txt")) if books_at.is_dir() else []
    if books:
        size = sum(p.stat().st_size for p in books)
        print(f"Data: {len(books)} book(s) in {books_at}, {size / 1e6:.1f} MB (`hellogpt data info` for details).")
    else:
        print(f"Data: no books in {books_at} (`hellogpt data bundled` or `hellogpt data download` gets some).")
    return 0


def export(args, home: Home) -> int:
    """`hellogpt export OUT_DIR`: a checkpoint in Hugging Face GPT-2 format."""
    name = model_name_from_args(args)
    model, tokenizer, _, where = load_for_inference(home, name, args.serial)
    out_dir = Path(args.out_dir).expanduser()
    export_hf(model, tokenizer, out_dir)
    print(f"Exported model '{name}' serial {where.serial} to {out_dir} in GPT-2 format "
          "(config.json, model.safetensors, tokenizer.json).")
    print("Load it with transformers (pip install transformers): "
          f"AutoModelForCausalLM.from_pretrained({str(out_dir)!r}) and AutoTokenizer.from_pretrained({str(out_dir)!r}).")
    return 0


def import_gpt2(args, home: Home) -> int:
    """`hellogpt import-hf DIR`: a local GPT-2-format model as a HelloGPT checkpoint."""
    folder = Path(args.dir).expanduser().resolve()
    name = args.model_name or folder.name
    path, cfg = import_hf(folder, home, name)
    print(f"Imported {folder} as model '{name}': {path} ({cfg.n_layers} layers, d_model {cfg.d_model}, "
          f"context {cfg.max_seq_len}, vocabulary {cfg.vocab_size}) with its tokenizer.")
    print(f'Try it: hellogpt generate --model-name {name} "Once upon a time"')
    return 0


def inspect(args, home: Home) -> int:
    """`hellogpt inspect "PROMPT"`: the five views in the terminal and a report folder."""
    show_inspection(home, model_name_from_args(args), valid_text(args.prompt), serial=args.serial, top_k=args.top_k,
                    out_dir=args.out, data=args.data)
    return 0


def show_inspection(home: Home, model_name: str, prompt: str, serial: int | None = None, top_k: int = 10,
                    out_dir=None, data=None, console: Console | None = None) -> Path:
    """Print the five views for `prompt` and write the report folder; return the folder's path."""
    console = console or Console()
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: show at least 1 token.")
    out = Path(out_dir).expanduser().resolve() if out_dir else None
    if out is not None:
        check_out_dir(out)  # fail before the work, not after
    seen = look(home, model_name, prompt, serial, data)
    console.print(f"Model '{seen.where.model_name}', serial {seen.where.serial}: {seen.where.path}\n", markup=False,
                  soft_wrap=True)
    inspect_views.print_tokens(console, seen.inspection)
    inspect_views.print_next_token(console, seen.inspection, top_k)
    inspect_views.print_attention_summary(console, seen.inspection)
    inspect_views.print_logit_lens(console, seen.inspection)
    console.print(Text("\n5. Embeddings: where the most frequent tokens sit", style="bold"))
    console.print(seen.pca_note, markup=False, soft_wrap=True)
    with console.status("Drawing the figures..."):
        report = save_report(home, seen, top_k, out)
    console.print(f"\nFigures and index.html in {report}\nOpen {report / 'index.html'} in a browser to see them all.",
                  markup=False, soft_wrap=True)  # a path cut by a line break cannot be copied
    return report
