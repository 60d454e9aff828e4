"""Where HelloGPT keeps things: one home folder holding `data/` and `artifacts/`.

The home is the project root by default, `HELLOGPT_HOME` or `--home DIR`
override it, so that tests and users can keep several worlds apart.

    <home>/data/*.txt                                   books
    <home>/artifacts/tokenizer/tokenizer.json           the byte-level BPE
    <home>/artifacts/tokens/<fingerprint>/               tokenized books (memmap cache)
    <home>/artifacts/checkpoints/<model_name>/serial_<N>.pt
    <home>/artifacts/checkpoints/<model_name>/metrics.jsonl, loss_curve.png
    <home>/artifacts/inspect/<model_name>/<time stamp>/  `hellogpt inspect` reports
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hellogpt.core.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[3]


MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")


def check_model_name(name: str) -> str:
    """A model name becomes one folder under artifacts/checkpoints/: letters, digits, '.', '_' and '-',
    at most 100 characters, not starting with a dot or a dash. Returns it unchanged."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise UserError(f"{name!r} cannot be a model name: it becomes one folder under artifacts/checkpoints/. "
                        "Use letters, digits, '.', '_' and '-' (at most 100 characters, not starting with '.' or "
                        "'-'), such as my-model or austen_2.")
    return name


def default_home() -> Path:
    env = os.environ.get("HELLOGPT_HOME")
    if env:
        return Path(env).expanduser().resolve()
    # Installed from a checkout (editable or not), the root holds main.py; otherwise use the cwd.
    if (PROJECT_ROOT / "main.py").is_file():
        return PROJECT_ROOT
    return Path.cwd()


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None) -> "Home":
        return cls(Path(home).expanduser().resolve() if home else default_home())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def tokenizer_dir(self) -> Path:
        return self.artifacts / "tokenizer"

    @property
    def tokenizer_path(self) -> Path:
        return self.tokenizer_dir / "tokenizer.json"

    @property
    def tokens_dir(self) -> Path:
        return self.artifacts / "tokens"

    @property
    def checkpoints_dir(self) -> Path:
        return self.artifacts / "checkpoints"

    def model_dir(self, model_name: str) -> Path:
        return self.checkpoints_dir / check_model_name(model_name)

    def inspect_dir(self, model_name: str) -> Path:
        return self.artifacts / "inspect" / check_model_name(model_name)
