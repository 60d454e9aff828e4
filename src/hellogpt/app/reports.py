"""The models on the terminal: the table of `hellogpt info` and the console's /model, and what a
checkpoint says of itself."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hellogpt.core.errors import UserError
from hellogpt.core.paths import Home
from hellogpt.model.checkpoint import load_checkpoint, serial_path, serials


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
