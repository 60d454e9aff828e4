"""Command line: `hellogpt [COMMAND]`. With no command, the guided console application.

This module reads the arguments and hands them to the command's function in app/; that
module (and with it torch) is imported only when a command runs, so `--help` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.core.settings import add_config_flags, describe_vocab_size

# command -> (module, function); each function takes (args, home) and returns an exit code.
COMMANDS = {
    "app": ("hellogpt.app.console", "run"),
    "data download": ("hellogpt.app.commands", "data_download"),
    "data bundled": ("hellogpt.app.commands", "data_bundled"),
    "data info": ("hellogpt.app.commands", "data_info"),
    "tokenizer train": ("hellogpt.app.commands", "tokenizer_train"),
    "train": ("hellogpt.app.commands", "train_model"),
    "eval": ("hellogpt.app.commands", "evaluate_model"),
    "plot": ("hellogpt.app.commands", "plot"),
    "generate": ("hellogpt.app.commands", "generate"),
    "info": ("hellogpt.app.commands", "info"),
    "export": ("hellogpt.app.commands", "export"),
    "import-hf": ("hellogpt.app.commands", "import_gpt2"),
    "inspect": ("hellogpt.app.commands", "inspect"),
}
MIRROR_HELP = ("a Gutenberg mirror with the cache/epub/<id>/pg<id>.txt layout (default: $HELLOGPT_GUTENBERG_MIRROR, "
               "else https://www.gutenberg.org)")


def _common_flags(parser: argparse.ArgumentParser, default) -> None:
    """Flags every command takes, before or after its name (`hellogpt --home X train` = `hellogpt train --home X`)."""
    parser.add_argument("--home", metavar="DIR", default=default,
                        help="folder holding data/ and artifacts/ (default: $HELLOGPT_HOME, else the project root)")
    parser.add_argument("--data", metavar="PATH", default=default,
                        help="a folder of .txt books or a single .txt file (default: <home>/data)")
    parser.add_argument("--model-name", metavar="NAME", default=default,
                        help="which model (default: hellogpt)")
    parser.add_argument("-y", "--yes", action="store_true", default=default,
                        help="answer yes to every question (for scripts)")


def _add_model_selector(p: argparse.ArgumentParser) -> None:
    p.add_argument("--serial", type=int, metavar="N", help="which checkpoint serial (default: the latest)")


def _add_generation_flags(p: argparse.ArgumentParser) -> None:
    # Defaults live in generation.generator.Settings alone; an unset flag (None) keeps the Settings default.
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="tokens to generate (default: 200)")
    p.add_argument("--temperature", type=float, metavar="T", help="0 is greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K likeliest; 0: off (default: 50)")
    p.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling; 1.0: off (default: 0.95)")
    p.add_argument("--repetition-penalty", type=float, metavar="R", help="1.0: off (default: 1.0)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop at this text (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hellogpt",
        description="HelloGPT: train a small GPT on plain-text books and watch it write. "
        "With no command, a guided console application walks you through it (the same as `hellogpt app`; "
        "`hellogpt app --help` lists the settings it takes). `hellogpt COMMAND --help` tells more of each command.",
    )
    _common_flags(parser, default=None)
    # The app (no command) trains a model when there is none: the same settings as train, listed by `app --help`.
    add_config_flags(parser, listed=False)
    parser.add_argument("--mirror", metavar="URL", help=argparse.SUPPRESS)
    common = argparse.ArgumentParser(add_help=False)
    _common_flags(common, default=argparse.SUPPRESS)  # a subcommand's copy only overrides when given
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add = lambda subparsers, name, **kw: subparsers.add_parser(name, parents=[common], **kw)  # noqa: E731

    app = add(sub, "app", help="the guided console application (the default)")
    app.add_argument("--mirror", metavar="URL", default=argparse.SUPPRESS, help=MIRROR_HELP)
    add_config_flags(app, unset=argparse.SUPPRESS)
    _add_data_commands(sub, add)
    _add_training_commands(sub, add)
    _add_model_commands(sub, add)
    return parser


def _add_data_commands(sub, add) -> None:
    data = add(sub, "data", help="get books and see what is in them")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    dl = add(data_sub, "download", help="download Project Gutenberg books into data/")
    dl.add_argument("ids", nargs="*", type=int, metavar="ID", help="Gutenberg book ids (default: a set of eight)")
    dl.add_argument("--mirror", metavar="URL", default=argparse.SUPPRESS, help=MIRROR_HELP)
    dl.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per-request timeout (default: 30)")
    add(data_sub, "bundled", help="copy the two books that come with HelloGPT into data/ (no network needed)")
    info = add(data_sub, "info", help="books, characters, bytes and tokens per split")
    info.add_argument("--val-fraction", type=float, default=None, metavar="F")

    tok = add(sub, "tokenizer", help="the byte-level BPE tokenizer")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    tt = add(tok_sub, "train", help="train the tokenizer on the books")
    tt.add_argument("--vocab-size", type=int, default=None, metavar="N",
                    help=f"vocabulary size (default: by the books' size, {describe_vocab_size(0)})")
    tt.add_argument("--val-fraction", type=float, default=None, metavar="F")


def _add_training_commands(sub, add) -> None:
    train = add(sub, "train", help="train a model (Ctrl-C saves and stops)")
    train.add_argument("--resume", action="store_true", help="continue from the latest serial")
    train.add_argument("--mirror", metavar="URL", default=argparse.SUPPRESS,
                       help="when data/ has no books and a download is chosen: " + MIRROR_HELP)
    add_config_flags(train, unset=argparse.SUPPRESS)  # `hellogpt --time 60 train` = `hellogpt train --time 60`

    ev = add(sub, "eval", help="validation loss, perplexity and bits per byte of a checkpoint")
    _add_model_selector(ev)
    ev.add_argument("--all", action="store_true", help="evaluate on the whole text, not only the validation split")
    ev.add_argument("--json", action="store_true", help="print JSON")

    add(sub, "plot", help="redraw a model's loss curve")


def _add_model_commands(sub, add) -> None:
    gen = add(sub, "generate", help="continue a prompt and print it")
    gen.add_argument("prompt", help="the text to continue")
    _add_model_selector(gen)
    _add_generation_flags(gen)
    gen.add_argument("--json", action="store_true", help="print JSON: text, token counts, timing")

    add(sub, "info", help="models, serials, tokenizer and data")

    ex = add(sub, "export", help="write a checkpoint in Hugging Face GPT-2 format")
    ex.add_argument("out_dir", metavar="OUT_DIR")
    ex.add_argument("--format", choices=["hf"], default="hf")
    _add_model_selector(ex)

    im = add(sub, "import-hf", help="turn a local GPT-2-format model into a HelloGPT checkpoint")
    im.add_argument("dir", metavar="DIR")

    ins = add(sub, "inspect", help="see inside the model on a prompt: tokens, attention, logit lens")
    ins.add_argument("prompt")
    _add_model_selector(ins)
    ins.add_argument("--top-k", type=int, default=10, metavar="K")
    ins.add_argument("--out", metavar="DIR", help="where the PNGs and index.html go")


def command_key(args: argparse.Namespace) -> str:
    if args.command in (None, "app"):
        return "app"
    for group in ("data", "tokenizer"):
        if args.command == group:
            return f"{group} {getattr(args, group + '_command')}"
    return args.command


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = COMMANDS[command_key(args)]
    try:
        home = Home.resolve(args.home)
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args, home) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except RuntimeError as e:
        if not _peer_failed(e):
            raise
        print(f"error: process {os.environ.get('RANK')} stopped: another process of this torchrun job ended first "
              "(its message says why).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `hellogpt generate ... | head` closed the pipe: not an error. Silence the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a read-only or full home, a folder without permission: the system's own words
        print(f"error: cannot write or read{_where(e)}: {e.strerror or e}. Check that the folder exists, is "
              "writable and has free space (or choose another with --home), then run again.", file=sys.stderr)
        return 2


def _peer_failed(error: RuntimeError) -> bool:
    """Under torchrun, a process whose peer has stopped sees its collectives fail (gloo: connection reset)."""
    lost = type(error).__name__ in ("DistBackendError", "DistNetworkError") or \
        any(words in str(error) for words in ("Connection reset by peer", "Connection closed by peer"))
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and lost


def _where(error: OSError) -> str:
    """The file an error names, or the folder of a temporary one (fileio.temporary_name)."""
    if not error.filename:
        return ""
    path = Path(os.fsdecode(error.filename))
    return f" {path.parent if path.name.startswith('.') and path.name.endswith('.tmp') else path}"
