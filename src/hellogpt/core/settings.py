"""Every setting in one place, with its default.

Defaults live here; a TOML file (`--config FILE`) overrides them, and command-line
flags override both (`--d-model 384`, one flag per field below). `model_name` is the
versioning key: checkpoints go to artifacts/checkpoints/<model_name>/serial_<N>.pt.
The effective configuration is printed when training starts and stored in every
checkpoint, and a checkpoint is always rebuilt from its own stored copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from hellogpt.core.errors import UserError
from hellogpt.core.paths import check_model_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass
class Config:
    # --- identity ---
    model_name: str = "hellogpt"  # checkpoints: artifacts/checkpoints/<model_name>/

    # --- tokenizer and data ---
    # Byte-level BPE vocabulary (256 bytes + merges + <|endoftext|>); 0: by the size of the books' training
    # text, 2048 or 2560 (vocab_size_for below)
    vocab_size: int = 0
    val_fraction: float = 0.1  # the last 10% of each book's characters are held out

    # --- model (see model.py) ---
    size: int = 4  # one dial for the fields below that are 0: see size_settings(); on a time budget, sizing.py
    max_seq_len: int = 0  # context length
    d_model: int = 0
    n_layers: int = 0
    n_heads: int = 0
    d_ffn: int = 0
    dropout: float = 0.0  # two minutes on one book is too short for dropout to pay off (it slows learning)
    bias: bool = True
    tie_embeddings: bool = True
    # exact (erf) or tanh (GPT-2's approximation): the same curve to 1e-3; on a CPU the exact one's forward and
    # backward take half the time (0.8 against 1.5 ms per block of the two-minute model).
    gelu: str = "exact"

    # --- training ---
    batch_size: int = 16  # windows per micro-batch: 16 x the context (16 N) tokens per step at --size N
    grad_accum: int = 1  # micro-batches per optimizer step
    optimizer: str = "muon"  # muon: Muon for the blocks' weight matrices, AdamW for the rest; adamw: AdamW for all
    lr: float = 0.0  # AdamW's peak learning rate (0: from size)
    muon_lr: float = 0.03  # Muon's peak learning rate
    # The learning rates decay linearly to their peak x min_lr_ratio. 0.1 (as nanoGPT's min_lr) against 0: 0.0019 and
    # 0.0024 bits per byte better at 1,800 steps (two seeds), and in two minutes better on four of the eight books
    # (by 0.0007 to 0.014), within 0.004 worse on the other four (benchmarks/RESULTS.md).
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    # On weight matrices and embeddings only (Muon and AdamW alike). The two-minute model passes over its book
    # about 7 times on a CPU without bfloat16: there 0.1 scored 0.009 bits per byte better than 0.2 and 0.011
    # better than 0.05 (size 3). On the CPU with bfloat16 (size 4, about 10 passes) 0.2 had been better; the
    # new value is not measured there (benchmarks/RESULTS.md).
    weight_decay: float = 0.1
    beta1: float = 0.9
    # AdamW's second-moment decay: 0.99 beat 0.95 by 0.0078 and 0.0055 bits per byte at 1,800 steps (two seeds;
    # 0.999: 0.003 worse than 0.99). A guess at why, not measured: a rare token's embedding row gets a gradient
    # only now and then, and a longer memory keeps its step size steadier.
    beta2: float = 0.99
    # Max global gradient norm; 0 turns clipping off. Off by default: Muon and AdamW bound their steps
    # themselves, and on the two-minute task clipping at 1.0 cost about 0.008 bits per byte.
    grad_clip: float = 0.0
    ema_decay: float = 0.995  # keep an average of the weights from halfway on (averaging.py); 0: off
    # The run length: the first limit reached ends the run (0: no such limit). Without --epochs or
    # --max-steps, at most DEFAULT_EPOCHS passes (on a short book more only overfit); without any, also
    # DEFAULT_TIME seconds.
    time: float = 0.0  # seconds of training, evaluations included
    epochs: float = 0.0  # passes over the training tokens
    max_steps: int = 0  # optimizer steps
    eval_every: int = 500  # steps between validation runs (each is 0.6 s of the two-minute run's 120)
    save_every: int = 0  # steps between checkpoints (0: only at the end and on Ctrl-C)
    seed: int = 1337
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    compile: bool = False  # torch.compile the model

    def __post_init__(self):
        if self.size < 1:
            raise UserError(f"Setting size = {self.size!r} is out of range: it must be 1 or more (4 is the "
                            "default; a run on a time budget picks its own unless told). Fix --size or the "
                            "config file.")
        for name, value in size_settings(self.size).items():
            if not getattr(self, name):
                setattr(self, name, value)
        if not (self.epochs or self.max_steps):
            self.time, self.epochs = self.time or DEFAULT_TIME, DEFAULT_EPOCHS
        check(self)

    def tokens_per_step(self, world_size: int = 1) -> int:
        """Training tokens per optimizer step: grad_accum micro-batches of batch_size windows of max_seq_len
        tokens, on each of world_size processes."""
        return self.batch_size * self.max_seq_len * self.grad_accum * world_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Rebuild from a stored copy; keys this version does not know are ignored. A copy without `gelu`
        predates the setting: its model computes GPT-2's tanh GELU (as GPTConfig's default says)."""
        known = {f.name for f in fields(cls)}
        return cls(**{"gelu": "tanh", **{k: v for k, v in d.items() if k in known}})


def size_settings(size: int) -> dict:
    """The model's shape and AdamW's learning rate for --size N, one consistent family (as nanochat's depth):
    N layers of N heads, each head 32 wide (d_model 32 N), the feed-forward 4x wider, a context of 16 N
    tokens, and the learning rate falling as 1 / sqrt(width). Size 4 (1.1 M parameters) is the two-minute
    model of a 2-core CPU with bfloat16 on Pride and Prejudice, size 3 (0.5 M) of one without: a run on a
    time budget takes the largest size that sees enough tokens on its machine (sizing.py). Size 3's context
    and learning rate were tuned on the CPU without bfloat16 (benchmarks/RESULTS.md)."""
    return dict(n_layers=size, n_heads=size, d_model=32 * size, d_ffn=128 * size, max_seq_len=16 * size,
                lr=6e-3 * math.sqrt(3 / size))


# Without a vocabulary size asked for, it follows the books' training text. A larger vocabulary puts more text in
# each token, so a run reads more of its books in the same steps, but it sees each token fewer times. With the
# two-minute model (benchmarks/RESULTS.md) 2,560 beat 2,048 on the two books of over 450,000 training characters
# (Pride and Prejudice by about 0.006 bits per byte, Sherlock Holmes by 0.003 and 0.016); on the six smaller ones
# it lost or tied (Northanger Abbey by 0.018, Oz 0.012, Alice 0.005, two within 0.0025), Frankenstein aside (0.003
# better). Larger texts were not tried: they keep 2,560 unless --vocab-size says otherwise.
LARGE_TEXT_CHARS = 450_000
MIN_VOCAB_SIZE = 257  # the 256 byte values plus <|endoftext|>
SEED_LIMIT = 2**63  # seeds go to torch.manual_seed, which takes 64-bit integers
SMALL_VOCAB, LARGE_VOCAB = 2048, 2560


def vocab_size_for(train_chars: int) -> int:
    """The vocabulary for books of train_chars training characters when no size is asked for."""
    return LARGE_VOCAB if train_chars >= LARGE_TEXT_CHARS else SMALL_VOCAB


def describe_vocab_size(vocab_size: int) -> str:
    """'2,560 tokens', or for 0 (by the books' size) what that will be."""
    if vocab_size:
        return f"{vocab_size:,} tokens"
    return f"{SMALL_VOCAB:,} tokens, or {LARGE_VOCAB:,} for over {LARGE_TEXT_CHARS:,} characters of training text"


OPTIMIZERS = ("muon", "adamw")
GELUS = ("exact", "tanh")  # the MLP's GELU (model.GPTConfig.gelu)
CHOICES = {"optimizer": OPTIMIZERS, "gelu": GELUS}  # settings that take one of a few words
RUN_LENGTH = ("time", "epochs", "max_steps")
DEFAULT_TIME = 120.0  # seconds: the two-minute model
DEFAULT_EPOCHS = 10.0  # Alice in Wonderland (40 k tokens): 2.77 bits/byte after 33 epochs in 120 s, 1.99 after 12


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, unset=None, listed: bool = True) -> None:
    """One flag per Config field, defaulting to `unset` (None) so that only what the user typed overrides.
    A subcommand's copy passes argparse.SUPPRESS, so that flags given before the command still count.
    listed=False keeps them out of --help (the top level, where `hellogpt app --help` lists them)."""
    group = parser.add_argument_group("settings (defaults in src/hellogpt/core/settings.py)")
    hide = {} if listed else {"help": argparse.SUPPRESS}
    group.add_argument("--config", metavar="FILE", default=unset,
                       help=hide.get("help", "TOML file of settings (flags override it)"))
    for f in fields(Config):
        if f.name == "model_name":
            continue  # every command that takes it declares --model-name itself
        default = f.default
        shown = "from --size" if f.name in size_settings(1) else default
        if f.name == "size":
            shown = f"{default}; with a time budget, the largest that sees enough tokens on this machine"
        if f.name == "vocab_size":
            shown = f"by the books' size: {describe_vocab_size(0)}"
        if f.name == "time":
            shown = f"{DEFAULT_TIME:g} when no run length is given"
        if f.name == "epochs":
            shown = f"{DEFAULT_EPOCHS:g} when neither --epochs nor --max-steps is given"
        help_text = hide.get("help", f"(default: {shown})")
        if f.name in CHOICES:
            group.add_argument(_flag(f.name), dest=f.name, default=unset, choices=CHOICES[f.name], help=help_text)
        elif isinstance(default, bool):
            group.add_argument(_flag(f.name), dest=f.name, default=unset, action=argparse.BooleanOptionalAction,
                               help=help_text)
        else:
            group.add_argument(_flag(f.name), dest=f.name, default=unset, type=type(default), metavar="N" if
                               isinstance(default, (int, float)) else "S", help=help_text)


def given_settings(config_file: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The settings the user set: the TOML file's, then the overrides (None values are ignored), checked."""
    values: dict = {}
    if config_file:
        path = Path(config_file)
        try:
            with open(path, "rb") as fh:
                values.update(tomllib.load(fh))
        except FileNotFoundError:
            raise UserError(f"Config file {path} does not exist. Check the path given to --config.")
        except IsADirectoryError:
            raise UserError(f"Config file {path} is a folder. Give --config a TOML file of settings.")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"Config file {path} is not valid TOML ({e}). Fix the file or leave out --config.")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    by_name = {f.name: f for f in fields(Config)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise UserError(
            f"Unknown setting(s) {', '.join(unknown)} in {config_file or 'the settings'}. "
            f"Known settings: {', '.join(by_name)}."
        )
    for name, value in values.items():
        expected = type(by_name[name].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise UserError(
                f"Setting {name} = {value!r} in {config_file or 'the settings'} should be a {expected.__name__} "
                f"(default: {by_name[name].default!r})."
            )
    for name, choices in CHOICES.items():
        if name in values and values[name] not in choices:
            raise UserError(f"Setting {name} = {values[name]!r} in {config_file or 'the settings'} is not "
                            f"one of {', '.join(choices)}.")
    return values


def load_config(config_file: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the TOML file, then the overrides (None values are ignored)."""
    return Config(**given_settings(config_file, overrides))


def given_settings_from_args(args: argparse.Namespace) -> dict:
    """The settings a command line set (its --config file and flags), without the defaults."""
    overrides = {f.name: getattr(args, f.name, None) for f in fields(Config)}
    return given_settings(getattr(args, "config", None), overrides)


def model_name_from_args(args: argparse.Namespace) -> str:
    """--model-name if given, else the default model_name above."""
    name = getattr(args, "model_name", None)
    return Config.model_name if name is None else check_model_name(name)


def check(config: Config) -> None:
    """Values that would make training fail, diverge or run forever, caught before any work."""
    check_model_name(config.model_name)
    rules = [
        ("vocab_size", config.vocab_size == 0 or config.vocab_size >= MIN_VOCAB_SIZE,
         f"0 (by the books' size) or at least {MIN_VOCAB_SIZE} (the 256 byte values plus <|endoftext|>)"),
        ("val_fraction", 0 <= config.val_fraction < 1, "from 0 (no validation) up to, not including, 1"),
        ("max_seq_len", config.max_seq_len >= 1, "at least 1"),
        ("d_model", config.d_model >= 1, "at least 1"),
        ("n_layers", config.n_layers >= 1, "at least 1"),
        ("n_heads", config.n_heads >= 1 and config.d_model % config.n_heads == 0,
         f"at least 1 and divide d_model ({config.d_model}): each head gets d_model / n_heads dimensions"),
        ("d_ffn", config.d_ffn >= 1, "at least 1"),
        ("dropout", 0 <= config.dropout < 1, "from 0 up to, not including, 1"),
        ("batch_size", config.batch_size >= 1, "at least 1"),
        ("grad_accum", config.grad_accum >= 1, "at least 1"),
        ("lr", 0 < config.lr < math.inf, "positive and finite"),
        ("muon_lr", 0 < config.muon_lr < math.inf, "positive and finite"),
        ("min_lr_ratio", 0 <= config.min_lr_ratio <= 1, "from 0 to 1"),
        ("warmup_steps", config.warmup_steps >= 0, "0 or more"),
        ("weight_decay", 0 <= config.weight_decay < math.inf, "0 or more, finite"),
        ("beta1", 0 <= config.beta1 < 1, "from 0 up to, not including, 1"),
        ("beta2", 0 <= config.beta2 < 1, "from 0 up to, not including, 1"),
        ("grad_clip", 0 <= config.grad_clip < math.inf, "0 (off) or more, finite"),
        ("ema_decay", 0 <= config.ema_decay < 1, "from 0 (off) up to, not including, 1"),
        ("time", 0 <= config.time < math.inf, "0 (no time limit) or more, finite"),
        ("epochs", 0 <= config.epochs < math.inf, "0 (no epoch limit) or more, finite"),
        ("max_steps", config.max_steps >= 0, "0 (no step limit) or more"),
        ("eval_every", config.eval_every >= 0, "0 (only at the end) or more"),
        ("save_every", config.save_every >= 0, "0 (only at the end) or more"),
        ("seed", 0 <= config.seed < SEED_LIMIT, "from 0 to 2**63 - 1"),
        ("gelu", config.gelu in GELUS, "'exact' or 'tanh'"),
        ("optimizer", config.optimizer in OPTIMIZERS, "'muon' or 'adamw'"),
    ]
    for name, ok, want in rules:
        if not ok:
            raise UserError(f"Setting {name} = {getattr(config, name)!r} is out of range: it must be {want}. "
                            f"Fix --{name.replace('_', '-')} or the config file.")
