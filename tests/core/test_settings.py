"""Settings: the --size dial, the default run length, the optimizer choice and how parameters are split."""

from __future__ import annotations

import pytest

from hellogpt.model.checkpoint import gpt_config
from hellogpt.core.settings import Config, given_settings, size_settings
from hellogpt.core.errors import UserError
from hellogpt.model.gpt import GPT
from hellogpt.training.optim import make_optimizer


def test_size_picks_a_consistent_shape():
    four = Config()
    assert (four.n_layers, four.n_heads, four.d_model, four.d_ffn, four.max_seq_len) == (4, 4, 128, 512, 64)
    six = Config(size=6)
    assert (six.n_layers, six.n_heads, six.d_model, six.d_ffn, six.max_seq_len) == (6, 6, 192, 768, 96)
    assert six.d_model // six.n_heads == four.d_model // four.n_heads == 32  # heads keep their width
    assert six.lr < four.lr < Config(size=3).lr == 6e-3  # wider models take smaller AdamW steps
    # A shape setting given on its own wins over the size; the rest still follows the size.
    mixed = Config(size=6, d_model=384, lr=1e-3)
    assert (mixed.d_model, mixed.n_layers, mixed.lr) == (384, 6, 1e-3)
    for size in range(1, 13):
        settings = size_settings(size)
        assert settings["d_model"] % settings["n_heads"] == 0


def test_size_must_be_positive():
    with pytest.raises(UserError, match="size = 0 is out of range"):
        Config(size=0)


def test_two_minutes_unless_a_run_length_is_given():
    assert (Config().time, Config().epochs, Config().max_steps) == (120.0, 10.0, 0)
    assert (Config(max_steps=5).time, Config(epochs=2.0).time, Config(time=30.0).time) == (0.0, 0.0, 30.0)
    # A time budget alone keeps the cap on passes over a short book; steps or epochs given replace it.
    assert Config(time=30.0).epochs == 10.0
    assert Config(max_steps=5).epochs == Config(time=30.0, max_steps=5).epochs == 0.0


def test_optimizer_must_be_known(tmp_path):
    settings = tmp_path / "s.toml"
    settings.write_text('optimizer = "sgd"\n')
    with pytest.raises(UserError, match="optimizer = 'sgd'.*not one of muon, adamw"):
        given_settings(settings)


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    config = Config(vocab_size=300, size=2)
    model = GPT(gpt_config(config))
    optimizer = make_optimizer(model, config)
    muon = {id(p) for g in optimizer.optimizers["muon"].param_groups for p in g["params"]}
    adamw = {id(p) for g in optimizer.optimizers["adamw"].param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[i] for i in muon) == sorted(n for n, p in model.named_parameters()
                                                    if n.startswith("blocks.") and p.dim() == 2)
    assert not muon & adamw and muon | adamw == set(names)  # every parameter in exactly one (the tied head once)
    decayed = {id(p) for g in optimizer.optimizers["adamw"].param_groups if g["weight_decay"] for p in g["params"]}
    assert sorted(names[i] for i in decayed) == ["pos_emb.weight", "tok_emb.weight"]  # not biases or gains
    split = {names[id(p)] for p, n in optimizer.optimizers["muon"].splits.items() if n == 3}
    assert split == {"blocks.0.attn.qkv.weight", "blocks.1.attn.qkv.weight"}  # query, key, value: three matrices
    # The schedule scales every group from its own peak.
    optimizer.set_lr(0.5)
    assert {g["lr"] for g in optimizer.param_groups} == {config.muon_lr * 0.5, config.lr * 0.5}

    only_adamw = make_optimizer(model, Config(vocab_size=300, size=2, optimizer="adamw"))
    assert list(only_adamw.optimizers) == ["adamw"]
    assert {id(p) for g in only_adamw.param_groups for p in g["params"]} == set(names)


def test_new_models_take_the_exact_gelu_and_older_stored_copies_the_tanh_one():
    assert Config().gelu == "exact" and gpt_config(Config()).gelu == "exact"
    assert Config.from_dict({"size": 2}).gelu == "tanh"  # stored before the setting existed: trained with tanh
    assert Config.from_dict(Config(gelu="exact").to_dict()).gelu == "exact"
    with pytest.raises(UserError, match="gelu = 'relu' is out of range: it must be 'exact' or 'tanh'"):
        Config(gelu="relu")  # a bad setting cannot make a Config
