"""The guided console application: `python main.py` (or `hellogpt` with no command).

It walks a newcomer from an empty folder to a model writing text, asking before each step:

    1. no books in data/?           offer the two bundled books, eight from Gutenberg, or your own
    2. no tokenizer?                offer to train one on the books
    3. the model has no checkpoint? show the training configuration and the data, offer to train it
    4. the prompt loop: type a beginning, the continuation streams; /help lists the commands

Steps 1 to 3 are guide.py's; this module is the prompt loop. A model that is already trained goes
straight to step 4, without loading the training code. Questions read standard input, so
answers can be piped in (`printf 'y\\n' | python main.py`); `--yes` answers yes to all of them
(and takes the bundled books).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Callable

from hellogpt.app.questions import Declined
from hellogpt.app.reports import print_models, val_bpb
from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.core.settings import Config, given_settings_from_args
from hellogpt.core.text import valid_text
from hellogpt.generation.generator import Settings, load_generator
from hellogpt.model.checkpoint import serials

BANNER = r"""
  _   _      _ _        ____ ____ _____
 | | | | ___| | | ___  / ___|  _ \_   _|
 | |_| |/ _ \ | |/ _ \| |  _| |_) || |
 |  _  |  __/ | | (_) | |_| |  __/ | |
 |_| |_|\___|_|_|\___/ \____|_|    |_|
 A small GPT you train yourself on books.
"""
EXIT_WORDS = {"x", "/quit", "/exit"}


@dataclass
class Command:
    usage: str
    help: str
    run: Callable[["App", str], None]


class App:
    """The prompt loop: a loaded model, the sampling settings, and the commands that change them."""

    def __init__(self, home: Home, model_name: str):
        self.home = home
        self.settings = Settings()
        self.load(model_name, None)

    def load(self, model_name: str, serial: int | None) -> None:
        self.generator, self.ckpt, self.where = load_generator(self.home, model_name, serial)
        print(f"Model '{self.where.model_name}', serial {self.where.serial} ({self.generator.model.num_params():,} "
              f"parameters, trained {self.ckpt.get('step', 0):,} steps).")

    def loop(self) -> int:
        interactive = sys.stdin.isatty()
        if interactive:
            _enable_line_editing(self.home)
        print("Type the beginning of a text (e.g. Elizabeth) and press Enter: the model continues it. "
              "/help lists the commands; X, /quit or Ctrl-D exits.")
        while True:
            try:
                line = valid_text(input("> "))  # invalid UTF-8 typed or piped in: replacement characters
            except EOFError:
                print()
                break
            except KeyboardInterrupt:
                print("\n(Ctrl-D, X or /quit exits.)")
                continue
            if not interactive:
                print(line)  # piped input is not echoed by a terminal: show what is being answered
            text = line.strip()
            if text.lower() in EXIT_WORDS:
                break
            if not text:
                print("Type some text for the model to continue, or /help.")
            elif text.startswith("/"):
                self.command(text)
            else:
                self.generate(line)
        print("Bye.")
        return 0

    def generate(self, prompt: str) -> None:
        out = sys.stdout
        bold, plain = ("\033[1m", "\033[0m") if out.isatty() else ("", "")
        try:
            out.write(f"{bold}{prompt}{plain}")
            for piece in self.generator.stream(prompt, self.settings):
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write(" [stopped]")
        finally:
            stats = self.generator.last
            out.write(f"\n({stats.new_tokens} tokens, {stats.tokens_per_second:.0f} tokens/s, seed {stats.seed})\n")
            out.flush()

    def command(self, text: str) -> None:
        name, _, rest = text.partition(" ")
        command = COMMANDS.get(name.lower())
        if command is None:
            print(f"Unknown command {name}. /help lists the commands.")
            return
        try:
            command.run(self, rest.strip())
        except UserError as e:
            print(f"error: {e}")

    # --- commands (the table COMMANDS below lists them) ---

    def help(self, _: str) -> None:
        width = max(len(c.usage) for c in COMMANDS.values())
        for c in COMMANDS.values():
            print(f"  {c.usage:<{width}}  {c.help}")
        print(f"  {'X':<{width}}  exit (also Ctrl-D); Ctrl-C stops a generation")

    def set_setting(self, field: str, label: str, kind: type, value: str) -> None:
        if value:
            try:
                parsed = kind(value)
            except ValueError:
                raise UserError(f"{label} takes a {'whole number' if kind is int else 'number'}; got {value!r}.")
            self.settings = replace(self.settings, **{field: parsed})  # Settings checks the range
        print(f"{label}: {getattr(self.settings, field)}")

    def seed(self, value: str) -> None:
        if value.lower() in ("off", "none", "random"):
            self.settings = replace(self.settings, seed=None)
        elif value:
            try:
                self.settings = replace(self.settings, seed=int(value))
            except ValueError:
                raise UserError(f"/seed takes a whole number, or off for a fresh seed each time; got {value!r}.")
        seed = self.settings.seed
        print(f"seed: {seed}" if seed is not None else "seed: off (a fresh one each time; shown after each text)")

    def model(self, value: str) -> None:
        """`/model` lists, `/model NAME [SERIAL]` or `/model SERIAL` switches."""
        words = value.split()
        if not words:
            print_models(self.home, current=(self.where.model_name, self.where.serial))
            print("Switch with /model NAME [SERIAL] or /model SERIAL.")
            return
        if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
            raise UserError(f"/model takes a model name and an optional serial number; got {value!r}.")
        if words[0].isdigit():
            name, serial = self.where.model_name, int(words[0])
        else:
            name, serial = words[0], int(words[1]) if len(words) == 2 else None
        self.load(name, serial)

    def info(self, _: str) -> None:
        s = self.settings
        print(f"model: '{self.where.model_name}' serial {self.where.serial} ({self.where.path})")
        cfg = self.generator.model.config
        print(f"  {self.generator.model.num_params():,} parameters: {cfg.n_layers} layers, {cfg.n_heads} heads, "
              f"d_model {cfg.d_model}, context {cfg.max_seq_len}, vocabulary {cfg.vocab_size}")
        bpb = val_bpb(self.ckpt)
        print(f"  trained {self.ckpt.get('step', 0):,} steps, {self.ckpt.get('tokens_seen', 0):,} tokens; "
              f"validation bits per byte {'-' if bpb is None else f'{bpb:.3f}'}")
        print(f"settings: temperature {s.temperature}, top-k {s.top_k}, top-p {s.top_p}, max {s.max_new_tokens} "
              f"tokens, repetition penalty {s.repetition_penalty}, seed {'off' if s.seed is None else s.seed}")

    def inspect(self, prompt: str) -> None:
        from hellogpt.app.commands import show_inspection  # start-up: inspection's modules only when asked

        show_inspection(self.home, self.where.model_name, prompt, serial=self.where.serial)


# The commands of the prompt loop: name -> usage, help, method. Add a command with one line here.
COMMANDS: dict[str, Command] = {
    "/help": Command("/help", "this list", App.help),
    "/temp": Command("/temp [T]", "temperature: 0 is greedy, higher is more adventurous (default 0.8)",
                     lambda app, v: app.set_setting("temperature", "temperature", float, v)),
    "/top-k": Command("/top-k [K]", "sample among the K likeliest tokens (0: all)",
                      lambda app, v: app.set_setting("top_k", "top-k", int, v)),
    "/top-p": Command("/top-p [P]", "sample among the likeliest tokens that make up P of the probability (1: all)",
                      lambda app, v: app.set_setting("top_p", "top-p", float, v)),
    "/max": Command("/max [N]", "how many tokens to generate", lambda app, v: app.set_setting(
        "max_new_tokens", "max new tokens", int, v)),
    "/penalty": Command("/penalty [R]", "repetition penalty: above 1 makes tokens already seen less likely "
                        "(1: off)", lambda app, v: app.set_setting("repetition_penalty", "repetition penalty",
                                                                   float, v)),
    "/seed": Command("/seed [N|off]", "a fixed seed repeats the same text for the same prompt", App.seed),
    "/model": Command("/model [NAME] [SERIAL]", "list the models, or switch to another model or serial", App.model),
    "/info": Command("/info", "the model and the settings", App.info),
    "/inspect": Command("/inspect PROMPT", "look inside the model on PROMPT: tokens, next-token probabilities, "
                        "attention, logit lens, embeddings (figures and an index.html)", App.inspect),
    "/quit": Command("/quit", "exit", lambda app, v: None),  # handled by the loop; listed for /help
}


def _enable_line_editing(home: Home) -> None:
    """Arrow keys, editing and history (kept across sessions) for the prompt, where readline exists."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline
        return
    import atexit

    history = home.artifacts / "console_history"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(1000)

    def save():
        try:
            history.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(history)
        except OSError:
            pass

    atexit.register(save)


def run(args, home: Home) -> int:
    """`python main.py` / `hellogpt`: guide to a trained model, then the prompt loop."""
    print(BANNER)
    print(f"Home: {home.root}")
    given = given_settings_from_args(args)
    config = Config(**given)
    if not serials(home.model_dir(config.model_name)):
        from hellogpt.app.guide import ensure_model  # start-up: training's modules only without a model

        try:
            ensure_model(home, args, given)
        except Declined as e:
            print(e)
            return 1
    return App(home, config.model_name).loop()
