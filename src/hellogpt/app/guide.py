"""The guided steps before the first prompt, for a model that has no checkpoint yet: books, tokenizer,
then the training configuration shown and, when the user agrees, training with live progress."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hellogpt.app.progress import TokenizingBar, print_summary, training_display
from hellogpt.app.questions import Declined, ask
from hellogpt.app.setup import ensure_books, ensure_tokenizer
from hellogpt.core.device import pick_device, setup_device
from hellogpt.core.paths import Home
from hellogpt.core.settings import Config
from hellogpt.data.tokens import num_windows, prepare_tokens
from hellogpt.model.checkpoint import gpt_config
from hellogpt.model.gpt import GPT
from hellogpt.training.schedule import plan_for
from hellogpt.training.sizing import fit_size, should_fit
from hellogpt.training.trainer import train


def optimizer_rows(config: Config) -> list[tuple[str, str, str]]:
    end = "0" if not config.min_lr_ratio else f"{config.min_lr_ratio:g} of it"
    schedule = f"peak, after {config.warmup_steps} warm-up steps, then linear decay to {end}"
    if config.optimizer == "adamw":
        return [("optimizer", "adamw", "AdamW for every parameter"), ("learning rate", f"{config.lr:g}", schedule)]
    return [("optimizer", "muon", "Muon for the blocks' weight matrices, AdamW for the rest"),
            ("learning rate", f"{config.muon_lr:g} / {config.lr:g}", f"Muon / AdamW {schedule}")]


def ensure_model(home: Home, args, given: dict) -> None:
    """Steps 1 to 3 for a model without a checkpoint: books, tokenizer, then training it. `given`: the
    settings the user set (flags and --config file)."""
    config = Config(**given)  # a bad setting is reported now, not after the questions
    pick_device(config.device)
    books = ensure_books(home, args.data, args.yes, getattr(args, "mirror", None))
    tokenizer = ensure_tokenizer(home, config, books, args.yes)
    console = Console(soft_wrap=True)
    data = prepare_tokens(home, books, tokenizer, config.val_fraction, TokenizingBar(console))
    if should_fit(given, config):  # the size for this machine and these books, shown before training
        device = pick_device(config.device)
        setup_device(device)
        config = fit_size(config, len(data.train), tokenizer.vocab_size, device, print)
        given = {**given, "size": config.size}  # decided: training takes it as given
    print()
    console.print(training_table(config, books, data, tokenizer.vocab_size))
    print("Change any of these with flags (e.g. `python main.py --time 300` or `--size 6`) or a TOML file "
          "(--config FILE).")
    if not ask(f"Train '{config.model_name}' now? (Ctrl-C stops and saves)", args.yes):
        raise Declined(f"Train it with `hellogpt train --model-name {config.model_name}`, then run me again.")
    # A Ctrl-C saves; the prompt loop uses what was saved.
    print_summary(console, train(config, home, books, given=given, reporter=training_display(console)))


def training_table(config: Config, books, data, vocab_size: int) -> Table:
    """What training would use: the model, the run's length, the optimizer, the data."""
    params = GPT(gpt_config(config, vocab_size)).num_params()
    T = config.max_seq_len
    plan = plan_for(config, len(data.train), config.tokens_per_step())
    table = Table(title=f"Model '{config.model_name}' has no checkpoint yet. Training would use:", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    rows = [
        ("model", f"{params:,}", f"parameters (size {config.size}): {config.n_layers} layers, {config.n_heads} "
                                 f"heads, d_model {config.d_model}, d_ffn {config.d_ffn}, context {T} tokens"),
        ("run length", plan.describe(), "of training (--time, --max-steps or --epochs; the first reached ends it)"),
        ("batch size", f"{config.batch_size}", f"windows of {T} tokens per step"),
        *optimizer_rows(config),
        ("dropout", f"{config.dropout:g}", "of activations zeroed while training"),
        ("clipping threshold", f"{config.grad_clip:g}", "largest gradient norm (0: no clipping)"),
        ("books", f"{len(data.books)}", f"in {books}"),
        ("tokens", f"{len(data.train) + len(data.val):,}", f"train {len(data.train):,}, validation {len(data.val):,} "
                                                           f"(the last {config.val_fraction:.0%} of each book)"),
        ("training samples", f"{num_windows(data.train, T):,}", f"windows of {T} tokens"),
        ("validation samples", f"{num_windows(data.val, T):,}", f"windows of {T} tokens"),
    ]
    for row in rows:
        table.add_row(*row)
    return table
