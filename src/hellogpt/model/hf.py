"""Hugging Face interchange: HelloGPT checkpoints to and from GPT-2's format.

HelloGPT's model is GPT-2's architecture, so a checkpoint maps onto transformers'
`GPT2LMHeadModel` tensor by tensor (`.weight` and `.bias` of each):

    HelloGPT               GPT-2
    tok_emb                transformer.wte
    pos_emb                transformer.wpe
    blocks.<i>.ln_1        transformer.h.<i>.ln_1
    blocks.<i>.attn.qkv    transformer.h.<i>.attn.c_attn   transposed
    blocks.<i>.attn.proj   transformer.h.<i>.attn.c_proj   transposed
    blocks.<i>.ln_2        transformer.h.<i>.ln_2
    blocks.<i>.mlp.fc      transformer.h.<i>.mlp.c_fc      transposed
    blocks.<i>.mlp.proj    transformer.h.<i>.mlp.c_proj    transposed
    ln_f                   transformer.ln_f
    head                   lm_head (written only when not tied to wte)

GPT-2 keeps its linear layers as `Conv1D`, whose weight is (in, out): the transpose of
nn.Linear's (out, in). `hellogpt export --format hf OUT_DIR` writes config.json,
model.safetensors and the tokenizer files; `hellogpt import-hf DIR` reads such a folder
(or one with pytorch_model.bin) into a HelloGPT checkpoint. Neither needs transformers:
JSON, safetensors and tokenizers are enough. Loading the export in transformers does.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from hellogpt.core.errors import UserError
from hellogpt.core.fileio import publish_folder, temporary_folder
from hellogpt.core.settings import Config
from hellogpt.data.tokenizer import EOT, Tokenizer, load_tokenizer
from hellogpt.model.checkpoint import checked_gpt_config, save_checkpoint
from hellogpt.model.gpt import GPT, GPTConfig

# GPT-2's activation names for the two GELUs HelloGPT's MLP computes (GPTConfig.gelu).
GELU_NAMES = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Old GPT-2 files also store each layer's causal mask as a buffer; it is not a weight.
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


def tensor_names(config: GPTConfig) -> list[tuple[str, str]]:
    """(HelloGPT name, GPT-2 name) of every tensor, in the table's order."""
    pairs = [("tok_emb.weight", "transformer.wte.weight"), ("pos_emb.weight", "transformer.wpe.weight")]
    sublayers = [("ln_1", "ln_1"), ("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                 ("ln_2", "ln_2"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")]
    for i in range(config.n_layers):
        for ours, theirs in sublayers:
            pairs += [(f"blocks.{i}.{ours}.{kind}", f"transformer.h.{i}.{theirs}.{kind}") for kind in ("weight", "bias")]
    pairs += [("ln_f.weight", "transformer.ln_f.weight"), ("ln_f.bias", "transformer.ln_f.bias")]
    if not config.tie_embeddings:
        pairs.append(("head.weight", "lm_head.weight"))
    return pairs


def _as_gpt2(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """nn.Linear's (out, in) weight as Conv1D's (in, out), and back: the same transpose."""
    return tensor.t() if name.endswith(CONV1D_WEIGHTS) else tensor


# --- export -------------------------------------------------------------------------------


def gpt2_config(model: GPT, eot_id: int) -> dict:
    """config.json for transformers' GPT2LMHeadModel with exactly this model's shape."""
    cfg = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_seq_len,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_ffn,
        "activation_function": "gelu_new" if cfg.gelu == "tanh" else "gelu",
        "layer_norm_epsilon": model.ln_f.eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": 0.0,  # HelloGPT drops no attention weights
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "use_cache": True,
    }


def export_hf(model: GPT, tokenizer: Tokenizer, out_dir: Path) -> None:
    """Write model and tokenizer (the one it was trained with) as a GPT-2 folder that transformers
    loads offline."""
    if not model.config.bias:
        raise UserError(
            "This model was trained without biases (bias = false), and GPT-2's format has no way to say "
            "so: every GPT-2 linear layer and LayerNorm has a trainable bias. Export refuses rather than "
            "write a different architecture. Train with biases (the default, --bias) to export."
        )
    state = model.state_dict()
    tensors = {theirs: _as_gpt2(theirs, state[ours]).contiguous() for ours, theirs in tensor_names(model.config)}
    # GPT-2's vocab.json and merges.txt cannot say "a space after each newline" (tokenizer.py), and
    # transformers rebuilds a GPT2Tokenizer from them alone: a tokenizer with that step is declared as the
    # generic class, which takes tokenizer.json as it is, and gets no vocab.json and merges.txt.
    gpt2_files = not tokenizer.spaced
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer" if gpt2_files else "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "add_prefix_space": False,
        "model_max_length": model.config.max_seq_len,
        "clean_up_tokenization_spaces": False,  # decode gives back the exact text, as HelloGPT's does
    }
    with _new_folder(out_dir, "export") as tmp:
        (tmp / "config.json").write_text(json.dumps(gpt2_config(model, tokenizer.eot_id), indent=2) + "\n")
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        tokenizer.hf.save(str(tmp / "tokenizer.json"))
        if gpt2_files:
            tokenizer.hf.model.save(str(tmp))  # vocab.json and merges.txt, for loaders without tokenizer.json
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


# --- import -------------------------------------------------------------------------------


def read_gpt2_config(path: Path) -> GPTConfig:
    """A GPT-2 config.json as HelloGPT's model configuration; refuses what the model cannot compute."""
    try:
        gpt2 = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"No config.json in {path.parent}. Point import-hf at a GPT-2 model folder, one that "
                        "holds config.json, model.safetensors (or pytorch_model.bin) and tokenizer.json.")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}). Restore the file from where the model came from.")
    model_type = gpt2.get("model_type") if isinstance(gpt2, dict) else None
    if model_type != "gpt2":
        raise UserError(f"{path} describes a {model_type or 'nameless'!r} model, but HelloGPT imports only "
                        "GPT-2 models (model_type \"gpt2\"), whose architecture is its own.")
    unsupported = []
    activation = gpt2.get("activation_function", "gelu_new")
    if not isinstance(activation, str) or activation not in GELU_NAMES:
        unsupported.append(f"activation_function {activation!r} (HelloGPT computes {' or '.join(GELU_NAMES)})")
    if gpt2.get("layer_norm_epsilon", 1e-5) != 1e-5:
        unsupported.append(f"layer_norm_epsilon {gpt2['layer_norm_epsilon']} (HelloGPT uses 1e-05)")
    if not gpt2.get("scale_attn_weights", True):
        unsupported.append("scale_attn_weights false (HelloGPT divides scores by sqrt(head size))")
    if gpt2.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("scale_attn_by_inverse_layer_idx true")
    if gpt2.get("add_cross_attention", False):
        unsupported.append("add_cross_attention true")
    if unsupported:
        raise UserError(f"{path} asks for a variant of GPT-2 that HelloGPT's model does not compute: "
                        f"{'; '.join(unsupported)}. Importing it would give different outputs, so it is refused.")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if k not in gpt2]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}, which give the model's shape. "
                        "Restore the file from where the model came from.")
    return checked_gpt_config({
        "vocab_size": gpt2["vocab_size"],
        "max_seq_len": gpt2["n_positions"],
        "d_model": gpt2["n_embd"],
        "n_layers": gpt2["n_layer"],
        "n_heads": gpt2["n_head"],
        "d_ffn": gpt2.get("n_inner") or (4 * gpt2["n_embd"] if isinstance(gpt2["n_embd"], int) else None),
        "dropout": gpt2.get("resid_pdrop", 0.1),
        "bias": True,
        "tie_embeddings": bool(gpt2.get("tie_word_embeddings", True)),
        "gelu": GELU_NAMES[activation],
    }, path)


def read_gpt2_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, else pytorch_model.bin (loaded with weights_only: no code runs from it)."""
    safetensors_path, pytorch_path = folder / "model.safetensors", folder / "pytorch_model.bin"
    try:
        if safetensors_path.is_file():
            return load_file(safetensors_path)
        if pytorch_path.is_file():
            return torch.load(pytorch_path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # damaged or hostile bytes make the readers raise almost anything
        bad = safetensors_path if safetensors_path.is_file() else pytorch_path
        raise UserError(f"The weights file {bad} cannot be read ({type(e).__name__}: {e}). It may be truncated, "
                        "or (a .bin) hold more than plain tensors; download it again or save it as safetensors.")
    raise UserError(
        f"No model.safetensors or pytorch_model.bin in {folder}. HelloGPT imports a single weights file; a model "
        "split into shards can be saved as one with transformers: "
        "model.save_pretrained(DIR, max_shard_size='100GB')."
    )


def from_gpt2(config: GPTConfig, tensors: dict[str, torch.Tensor], folder: Path) -> GPT:
    """HelloGPT's model holding GPT-2 tensors (names with or without the `transformer.` prefix)."""
    found = {}
    for name, tensor in tensors.items():
        if name.endswith(MASK_BUFFERS) or (config.tie_embeddings and name == "lm_head.weight"):
            continue  # a mask is not a weight; a tied head is wte itself
        found[name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name] = tensor
    pairs = tensor_names(config)
    missing = [theirs for _, theirs in pairs if theirs not in found]
    unexpected = sorted(set(found) - {theirs for _, theirs in pairs})
    if missing or unexpected:
        raise UserError(
            f"The weights in {folder} do not match its config.json as a GPT-2 language model "
            f"(missing: {', '.join(missing[:5]) or 'none'}; unexpected: {', '.join(unexpected[:5]) or 'none'}). "
            "Import a GPT2LMHeadModel saved with its own config.json."
        )
    state = {ours: _as_gpt2(theirs, found[theirs]).float() for ours, theirs in pairs}
    if config.tie_embeddings:
        state["head.weight"] = state["tok_emb.weight"]
    model = GPT(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"The weights in {folder} have other shapes than its config.json says ({e}). "
                        "Import the config.json that was saved with these weights.")
    return model


def read_gpt2_tokenizer(path: Path) -> Tokenizer:
    """A GPT-2-style tokenizer.json (byte-level BPE with <|endoftext|>) as HelloGPT's Tokenizer."""
    if not path.is_file():
        raise UserError(
            f"No tokenizer.json in {path.parent}. If the folder has vocab.json and merges.txt instead, let "
            "transformers write one: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)."
        )
    return load_tokenizer(path, remedy="Restore it from where the model came from; HelloGPT imports GPT-2-style "
                                       "tokenizers, which have it.")


def import_hf(folder: Path, home, name: str) -> tuple[Path, GPTConfig]:
    """Turn a GPT-2 folder into model `name`'s first checkpoint plus its own tokenizer.json;
    return the checkpoint's path and the model's configuration."""
    model_dir = home.model_dir(name)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder. Point import-hf at a GPT-2 model folder (config.json, "
                        "model.safetensors or pytorch_model.bin, tokenizer.json).")
    if model_dir.exists() and any(model_dir.iterdir()):
        raise UserError(f"Model '{name}' already exists in {model_dir}. Import under another name "
                        "(--model-name NEW), or delete that folder first.")
    config = read_gpt2_config(folder / "config.json")
    tokenizer = read_gpt2_tokenizer(folder / "tokenizer.json")
    if tokenizer.vocab_size > config.vocab_size:
        raise UserError(f"The tokenizer in {folder} has {tokenizer.vocab_size} tokens but the model only "
                        f"{config.vocab_size}; they do not belong together.")
    model = from_gpt2(config, read_gpt2_weights(folder), folder)
    payload = {
        "model": model.state_dict(),
        "model_config": config.to_dict(),
        "config": Config(model_name=name, **config.to_dict()).to_dict(),
        "optimizer": None,
        "scheduler": None,
        "step": 0,
        "epoch": 0,
        "tokens_seen": 0,
        "elapsed": 0.0,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "data_fingerprint": None,
        "rng": None,
        "metrics": [],
    }
    with _new_folder(model_dir, "import") as tmp:
        shutil.copyfile(folder / "tokenizer.json", tmp / "tokenizer.json")  # byte for byte: same fingerprint
        serial_path = save_checkpoint(tmp, payload)
    return model_dir / serial_path.name, config


# --- both ---------------------------------------------------------------------------------


@contextmanager
def _new_folder(final: Path, what: str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; when the block succeeds, it becomes
    `final` whole (one rename). Refuses to replace anything but an empty folder."""
    if final.exists() and not final.is_dir():
        raise UserError(f"{final} is a file. Give {what} the name of a folder that does not exist yet.")
    if final.is_dir() and any(final.iterdir()):
        raise UserError(f"{final} already exists and is not empty, and {what} never overwrites files. "
                        "Pick a new folder, or empty this one first.")
    with temporary_folder(final) as tmp:
        yield tmp
        if publish_folder(tmp, [final]) is None:
            raise UserError(f"{final} appeared while {what} was writing it. Pick a new folder and run again.")
