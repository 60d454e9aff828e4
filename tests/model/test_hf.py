"""Hugging Face interchange, checked against transformers' own GPT-2: same logits, same
greedy text, after `hellogpt export` and after `hellogpt import-hf`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may come from the internet

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from hellogpt.cli import main
from hellogpt.model import hf
from hellogpt.model.checkpoint import load_for_inference, save_checkpoint, serials
from hellogpt.core.settings import Config
from hellogpt.core.errors import UserError
from hellogpt.model.gpt import GPT
from hellogpt.core.paths import Home
from hellogpt.data.tokenizer import EOT, load_tokenizer, train_bpe
from helpers import bundled

pytestmark = pytest.mark.integration

CONTEXT = 64
NEW_TOKENS = 30  # greedy tokens after a 10-token prompt, within the context (transformers cannot slide it)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    """A byte-level BPE of 400 tokens trained on the start of Pride and Prejudice."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    text = bundled(1342)[:200_000]
    train_bpe([text], vocab_size=400, show_progress=False).save(str(path))
    return path


@pytest.fixture(scope="module")
def text():
    """Text the tokenizer was not trained on (The Wonderful Wizard of Oz), with non-ASCII characters."""
    return bundled(55)[20_000:22_000] + " Café — “naïve” 日本"


@pytest.fixture
def home(tmp_path, tokenizer_file):
    home = Home(tmp_path / "home")
    home.tokenizer_path.parent.mkdir(parents=True)
    shutil.copyfile(tokenizer_file, home.tokenizer_path)
    return home


def save_model(home: Home, model: GPT, name: str = "hellogpt") -> None:
    """A checkpoint as training writes one (other engineers' code trains; here the weights are random)."""
    cfg = model.config
    save_checkpoint(home.model_dir(name), {
        "model": model.state_dict(), "model_config": cfg.to_dict(),
        "config": Config(model_name=name, **cfg.to_dict()).to_dict(),
        "optimizer": None, "scheduler": None, "step": 0, "epoch": 0, "tokens_seen": 0, "elapsed": 0.0,
        "tokenizer_fingerprint": load_tokenizer(home.tokenizer_path).fingerprint, "data_fingerprint": None,
        "rng": None, "metrics": [],
    })


def hellogpt(*args, home: Home) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hellogpt", *args, "--home", str(home.root)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@torch.no_grad()
def assert_same_logits(ours: GPT, theirs, sequences: torch.Tensor) -> None:
    """Float32 logits of both models agree within 1e-4 on every position of every sequence."""
    diff = (ours(sequences)[0] - theirs(sequences).logits).abs().max().item()
    assert diff < 1e-4, f"logits differ by {diff}"


@torch.no_grad()
def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def corpus_batch(ids: list[int]) -> torch.Tensor:
    """Consecutive full-context windows of tokenized text, (B, CONTEXT)."""
    n = len(ids) // CONTEXT
    assert n >= 2
    return torch.tensor(ids[: n * CONTEXT]).view(n, CONTEXT)


@pytest.mark.parametrize("tie, gelu", [(True, "tanh"), (False, "exact")])
def test_export_loads_in_transformers_and_computes_the_same(home, make_gpt, greedy, text, tmp_path, tie, gelu):
    vocab = load_tokenizer(home.tokenizer_path).vocab_size
    model = make_gpt(vocab_size=vocab, max_seq_len=CONTEXT, tie_embeddings=tie, gelu=gelu)
    save_model(home, model)
    out = tmp_path / "exported"
    if tie:  # through the command line once; a subprocess costs seconds
        result = hellogpt("export", "--format", "hf", str(out), home=home)
        assert result.returncode == 0, result.stderr
    else:
        assert main(["--home", str(home.root), "export", str(out)]) == 0  # the same entry point, in this process
    theirs = AutoModelForCausalLM.from_pretrained(out).eval()
    their_tokenizer = AutoTokenizer.from_pretrained(out)

    assert isinstance(theirs, GPT2LMHeadModel)
    assert theirs.config.activation_function == {"tanh": "gelu_new", "exact": "gelu"}[gelu]
    assert theirs.num_parameters() == model.num_params()
    assert (theirs.lm_head.weight is theirs.transformer.wte.weight) == tie
    ids = load_tokenizer(home.tokenizer_path).encode(text)
    assert their_tokenizer(text)["input_ids"] == ids
    assert their_tokenizer.decode(ids) == text
    assert their_tokenizer.eos_token_id == their_tokenizer.convert_tokens_to_ids(EOT) == theirs.config.eos_token_id

    assert_same_logits(model, theirs, torch.randint(0, vocab, (4, CONTEXT)))
    assert_same_logits(model, theirs, corpus_batch(ids))
    prompt = ids[:10]
    assert hf_greedy(theirs, prompt, NEW_TOKENS) == greedy(model, prompt, NEW_TOKENS, use_cache=True)[0]


def transformers_model(vocab: int, tie: bool = True, activation: str = "gelu_new") -> GPT2LMHeadModel:
    """A small GPT-2 made by transformers, with weights redrawn large so that mistakes show."""
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=vocab, n_positions=CONTEXT, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie, activation_function=activation)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(mean=1.0 if ".ln_" in name and name.endswith("weight") else 0.0, std=0.2)
    return model


@pytest.mark.parametrize("weights", ["safetensors", "old-style bin"])
def test_import_of_a_transformers_model_computes_the_same(home, tokenizer_file, greedy, text, tmp_path, weights):
    source = tmp_path / "gpt2"
    # The safetensors model has GPT-2's GELU (tanh), the other the exact one ("gelu").
    theirs = transformers_model(vocab=load_tokenizer(tokenizer_file).vocab_size,
                                activation="gelu_new" if weights == "safetensors" else "gelu")
    theirs.save_pretrained(source)
    PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token=EOT, eos_token=EOT).save_pretrained(source)
    if weights == "old-style bin":
        # As OpenAI's GPT-2 files: a pickle of tensors, names without "transformer.", causal-mask buffers, no lm_head.
        (source / "model.safetensors").unlink()
        state = {k.removeprefix("transformer."): v for k, v in theirs.state_dict().items() if k != "lm_head.weight"}
        state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, CONTEXT, CONTEXT))
        torch.save(state, source / "pytorch_model.bin")

    if weights == "safetensors":  # through the command line once; a subprocess costs seconds
        result = hellogpt("import-hf", str(source), "--model-name", "gpt2", home=home)
        assert result.returncode == 0, result.stderr
        assert "hellogpt generate --model-name gpt2" in result.stdout
    else:  # without --model-name: named after the folder
        assert main(["--home", str(home.root), "import-hf", str(source)]) == 0
    ours, tokenizer, ckpt, where = load_for_inference(home, "gpt2")  # also checks the tokenizer's fingerprint

    assert where.serial == 1 and ckpt["optimizer"] is None and ckpt["config"]["model_name"] == "gpt2"
    assert (home.model_dir("gpt2") / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    ids = tokenizer.encode(text)
    assert AutoTokenizer.from_pretrained(source)(text)["input_ids"] == ids
    assert_same_logits(ours, theirs, torch.randint(0, tokenizer.vocab_size, (4, CONTEXT)))
    assert_same_logits(ours, theirs, corpus_batch(ids))
    prompt = ids[:10]
    assert greedy(ours, prompt, NEW_TOKENS, use_cache=True)[0] == hf_greedy(theirs, prompt, NEW_TOKENS)


def test_generate_with_an_imported_model_writes_what_transformers_writes(home, tokenizer_file, tmp_path):
    """The README's recipe for GPT-2's own weights: import-hf, then `hellogpt generate` (greedy)."""
    source = tmp_path / "gpt2"
    theirs = transformers_model(vocab=load_tokenizer(tokenizer_file).vocab_size)
    theirs.save_pretrained(source)
    their_tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token=EOT, eos_token=EOT)
    their_tokenizer.save_pretrained(source)
    hf.import_hf(source, home, "gpt2")

    prompt = "It was a dark and stormy night"
    result = hellogpt("generate", prompt, "--model-name", "gpt2", "--temperature", "0", "--max-new-tokens",
                      str(NEW_TOKENS), "--json", home=home)
    assert result.returncode == 0, result.stderr
    ids = their_tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():  # transformers' greedy search, stopping at <|endoftext|> as HelloGPT does
        new = theirs.generate(ids, do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=0)[0, ids.size(1):]
    assert json.loads(result.stdout)["text"] == their_tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("tie", [True, False])
def test_export_then_import_gives_back_the_same_weights(home, make_gpt, tmp_path, tie):
    model = make_gpt(vocab_size=load_tokenizer(home.tokenizer_path).vocab_size, max_seq_len=CONTEXT, tie_embeddings=tie)
    hf.export_hf(model, load_tokenizer(home.tokenizer_path), tmp_path / "out")
    path, _ = hf.import_hf(tmp_path / "out", home, "again")
    back, _, _, _ = load_for_inference(home, "again")
    assert path == home.model_dir("again") / "serial_1.pt"
    assert back.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_export_refuses_a_model_without_biases(home, make_gpt, tmp_path):
    save_model(home, make_gpt(vocab_size=400, max_seq_len=CONTEXT, bias=False))
    result = hellogpt("export", "--format", "hf", str(tmp_path / "out"), home=home)
    assert result.returncode == 2
    assert "without biases" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_export_never_overwrites_and_leaves_nothing_half_written(home, make_gpt, tmp_path, monkeypatch):
    model, tokenizer = make_gpt(vocab_size=400, max_seq_len=CONTEXT), load_tokenizer(home.tokenizer_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        hf.export_hf(model, tokenizer, taken)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf, "save_file", disk_full)
    with pytest.raises(OSError):
        hf.export_hf(model, tokenizer, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "taken"]  # no out, no temporary folder

    monkeypatch.undo()
    (tmp_path / "empty").mkdir()
    hf.export_hf(model, tokenizer, tmp_path / "empty")  # an empty folder is fine to fill
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def gpt2_folder(path, tokenizer_file, **config_changes):
    """A minimal GPT-2 folder written by hand, with config.json changes to test refusals."""
    theirs = transformers_model(vocab=400)
    theirs.save_pretrained(path)
    shutil.copyfile(tokenizer_file, path / "tokenizer.json")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **config_changes}))
    return path


@pytest.mark.parametrize("change, message", [
    ({"model_type": "llama"}, "'llama' model, but HelloGPT imports only GPT-2"),
    ({"activation_function": "relu"}, "activation_function 'relu'"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon 1e-06"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"n_layer": 3}, "missing: transformer.h.2"),
    ({"n_inner": 100}, "other shapes than its config.json says"),
])
def test_import_refuses_what_the_model_cannot_compute(home, tokenizer_file, tmp_path, change, message):
    source = gpt2_folder(tmp_path / "src", tokenizer_file, **change)
    with pytest.raises(UserError, match=message):
        hf.import_hf(source, home, "x")
    assert not home.checkpoints_dir.exists() or list(home.checkpoints_dir.iterdir()) == []


def test_import_refusals_for_missing_or_foreign_files(home, tokenizer_file, tmp_path):
    source = gpt2_folder(tmp_path / "src", tokenizer_file)
    (source / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="No tokenizer.json"):
        hf.import_hf(source, home, "x")

    no_eot = train_bpe(["just some text without the separator"], vocab_size=300, show_progress=False)
    no_eot.add_tokens(["<|other|>"])
    shutil.rmtree(source)
    source = gpt2_folder(tmp_path / "src", tokenizer_file)
    no_eot.save(str(source / "tokenizer.json"))
    tokenizer_json = json.loads((source / "tokenizer.json").read_text())
    tokenizer_json["added_tokens"] = [t for t in tokenizer_json["added_tokens"] if t["content"] != EOT]
    tokenizer_json["model"]["vocab"].pop(EOT, None)
    (source / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    with pytest.raises(UserError, match="has no <\\|endoftext\\|> token"):
        hf.import_hf(source, home, "x")

    shutil.copyfile(tokenizer_file, source / "tokenizer.json")
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted download
    with pytest.raises(UserError, match="model.safetensors cannot be read"):
        hf.import_hf(source, home, "x")
    weights.unlink()
    with pytest.raises(UserError, match="No model.safetensors or pytorch_model.bin"):
        hf.import_hf(source, home, "x")
    with pytest.raises(UserError, match="No config.json"):
        hf.import_hf(tmp_path, home, "x")
    assert serials(home.model_dir("x")) == []


def test_import_refuses_an_existing_model_name(home, make_gpt, tokenizer_file, tmp_path):
    save_model(home, make_gpt(vocab_size=400, max_seq_len=CONTEXT), name="mine")
    before = (home.model_dir("mine") / "serial_1.pt").read_bytes()
    with pytest.raises(UserError, match="Model 'mine' already exists"):
        hf.import_hf(gpt2_folder(tmp_path / "src", tokenizer_file), home, "mine")
    assert serials(home.model_dir("mine")) == [1]
    assert (home.model_dir("mine") / "serial_1.pt").read_bytes() == before
