"""Checkpoints: artifacts/checkpoints/<model_name>/serial_<N>.pt, never overwritten.

Saving writes the whole file under a temporary name, fsyncs it, then hard-links it to
the next free `serial_<N>.pt`. A hard link is atomic and fails if the name exists, so
a serial only ever appears complete, and two trainers saving at once each get their own
number. kill -9 at any moment leaves at most a stray temporary file (cleaned up later).

Loading uses `torch.load(weights_only=True)`: a checkpoint holds tensors and plain
values only, and loading one never runs code from it.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from hellogpt.core.errors import UserError
from hellogpt.core.fileio import fsync_dir, remove_stale_temporaries, temporary_name
from hellogpt.core.paths import Home
from hellogpt.core.settings import Config
from hellogpt.data.tokenizer import load_tokenizer
from hellogpt.model.gpt import GPT, GPTConfig

SERIAL_RE = re.compile(r"^serial_(\d+)\.pt$")
TMP_PREFIX = ".serial."  # a temporary of a save being written (fileio.temporary_name)


def serials(model_dir: Path) -> list[int]:
    """The serial numbers present, ascending."""
    if not model_dir.is_dir():
        return []
    found = (SERIAL_RE.match(p.name) for p in model_dir.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def serial_path(model_dir: Path, serial: int) -> Path:
    return model_dir / f"serial_{serial}.pt"


def save_checkpoint(model_dir: Path, payload: dict) -> Path:
    """Write payload as the next serial atomically; return its path."""
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(model_dir / "serial")
    tmp = temporary_name(model_dir / "serial")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        serial = (serials(model_dir) or [0])[-1] + 1
        while True:
            target = serial_path(model_dir, serial)
            try:
                os.link(tmp, target)  # atomic, and refuses an existing name
                break
            except FileExistsError:
                serial += 1  # another trainer took this number a moment ago
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                    raise
                # A filesystem without hard links: claim the name exclusively, then rename over it.
                try:
                    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    serial += 1
                    continue
                os.replace(tmp, target)
                break
        fsync_dir(model_dir)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Read a checkpoint without executing anything from it; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint {path} does not exist. `hellogpt info` lists the models and serials there are.")
    try:
        with warnings.catch_warnings():  # a damaged file can also make torch warn (say, of a strange protocol)
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # damaged bytes make torch.load raise almost anything (IndexError, KeyError, ...)
        raise UserError(
            f"Checkpoint {path} is truncated or corrupt and cannot be loaded ({type(e).__name__}). "
            "Delete it (or pick another with --serial); earlier serials are unaffected."
        )
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise UserError(f"{path} is not a HelloGPT checkpoint (no model or configuration inside). "
                        "Delete it or pick another with --serial.")
    return ckpt


@dataclass
class Located:
    model_name: str
    serial: int
    path: Path


def locate(home: Home, model_name: str, serial: int | None = None) -> Located:
    """Find a model's checkpoint: the given serial, or the latest. Clear errors otherwise."""
    checkpoints_dir, model_dir = home.checkpoints_dir, home.model_dir(model_name)
    present = serials(model_dir)
    if not present:
        others = sorted(p.name for p in checkpoints_dir.iterdir() if serials(p)) if checkpoints_dir.is_dir() else []
        hint = f" Models with checkpoints: {', '.join(others)}." if others else ""
        raise UserError(
            f"Model '{model_name}' has no checkpoint in {model_dir}. Train it with "
            f"`hellogpt train --model-name {model_name}` (or run `python main.py`).{hint}"
        )
    if serial is None:
        serial = present[-1]
    elif serial not in present:
        raise UserError(f"Model '{model_name}' has no serial {serial}; it has serials "
                        f"{', '.join(map(str, present))} in {model_dir}.")
    return Located(model_name, serial, serial_path(model_dir, serial))


def gpt_config(config: Config, vocab_size: int | None = None) -> GPTConfig:
    """The model's shape and architecture from the settings (vocab_size: the trained tokenizer's)."""
    return GPTConfig(vocab_size=vocab_size or config.vocab_size, max_seq_len=config.max_seq_len,
                     d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads, d_ffn=config.d_ffn,
                     dropout=config.dropout, bias=config.bias, tie_embeddings=config.tie_embeddings,
                     gelu=config.gelu)


# The shape fields a model file may give, with the largest value taken from one (sizes far beyond any GPT).
SHAPE_LIMITS = {"vocab_size": 10_000_000, "max_seq_len": 1_000_000, "d_model": 100_000, "n_layers": 1_000,
                "n_heads": 10_000, "d_ffn": 1_000_000}


def checked_gpt_config(fields: dict, source: Path) -> GPTConfig:
    """A GPTConfig from a file's values (a checkpoint's stored configuration, a GPT-2 config.json), checked
    for types and ranges before anything is allocated; a model that would not fit in this machine's memory
    is refused with its size."""
    bad = []
    for name, limit in SHAPE_LIMITS.items():
        value = fields.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            bad.append(f"{name} = {value!r} (a whole number from 1 to {limit:,})")
    dropout = fields.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        bad.append(f"dropout = {dropout!r} (from 0 up to 1)")
    if fields.get("gelu", "tanh") not in ("tanh", "exact"):
        bad.append(f"gelu = {fields.get('gelu')!r} ('tanh' or 'exact')")
    if not bad and fields["d_model"] % fields["n_heads"]:
        bad.append(f"d_model = {fields['d_model']} with n_heads = {fields['n_heads']} (d_model must divide evenly)")
    if bad:
        raise UserError(f"{source} describes a model HelloGPT cannot build: {'; '.join(bad)}. The file is damaged "
                        "or not meant for HelloGPT; restore it from where it came from.")
    config = GPTConfig(**{k: fields[k] for k in GPTConfig.__dataclass_fields__ if k in fields})
    _check_fits(config, source)
    return config


def _check_fits(config: GPTConfig, source: Path) -> None:
    """Refuse a model whose float32 weights alone would take more than half of this machine's memory."""
    C, L = config.d_model, config.n_layers
    params = (config.vocab_size + config.max_seq_len) * C + L * (4 * C * C + 2 * C * config.d_ffn)
    need = 4 * params
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this system: no limit known
        return
    if need > memory / 2:
        raise UserError(f"{source} describes a model of about {params / 1e9:.1f} billion parameters, "
                        f"{need / 1e9:.1f} GB of weights, more than half of this machine's {memory / 1e9:.1f} GB "
                        "of memory. It was refused before allocating anything.")


def build_model(ckpt: dict, path: Path | None = None) -> GPT:
    """Rebuild the model from the checkpoint's own stored configuration (checked first) and load its weights."""
    source = path or Path("the checkpoint")
    if not isinstance(ckpt.get("model_config"), dict):
        raise UserError(f"{source} has no model configuration; it is not a HelloGPT checkpoint.")
    model = GPT(checked_gpt_config(ckpt["model_config"], source))
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UserError(f"The weights in {source} do not fit its stored configuration ({str(e).splitlines()[0]}). "
                        "The file is damaged: delete it or pick another serial with --serial.") from None
    return model


def check_tokenizer(ckpt: dict, tokenizer, path: Path) -> None:
    """Refuse a checkpoint trained with another tokenizer: its token ids would mean other text."""
    want = ckpt.get("tokenizer_fingerprint")
    if want and want != tokenizer.fingerprint:
        raise UserError(
            f"Checkpoint {path} was trained with a different tokenizer (fingerprint {want}, the current "
            f"one is {tokenizer.fingerprint}). Its token ids would decode to the wrong text. Either train "
            "a new model with the current tokenizer (`hellogpt train --model-name NEW`), or restore the "
            "tokenizer.json it was trained with into artifacts/tokenizer/."
        )


def tokenizer_path_for(home: Home, model_name: str) -> Path:
    """A model brought in with its own tokenizer (`hellogpt import-hf`) keeps it in its folder;
    every other model uses the home's tokenizer."""
    own = home.model_dir(model_name) / "tokenizer.json"
    return own if own.is_file() else home.tokenizer_path


def load_for_inference(home: Home, model_name: str, serial: int | None = None, device="cpu"):
    """(model in eval mode, tokenizer, checkpoint dict, Located) for generation, eval, export, inspect."""
    where = locate(home, model_name, serial)
    ckpt = load_checkpoint(where.path)
    tokenizer = load_tokenizer(tokenizer_path_for(home, model_name))
    check_tokenizer(ckpt, tokenizer, where.path)
    model = build_model(ckpt, where.path).to(device).eval()
    return model, tokenizer, ckpt, where
