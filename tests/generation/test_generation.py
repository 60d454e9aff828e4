"""Generation: KV-cached decoding equals plain decoding, sampling does what it says,
and streamed text never shows a broken character."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hellogpt.core.errors import UserError
from hellogpt.data.tokenizer import Tokenizer, train_bpe
from hellogpt.generation.generator import Generator, Settings, TextStream, sample


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models at batch 1 run fastest on one thread (and the generator uses one while decoding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MULTI_BYTE = "Élise’s café — “naïve” 🙂 façade, Zoë 👩‍👩‍👧 ½ ∑ 日本語 ünd ß"


@pytest.fixture(scope="module")
def splitting_tokenizer() -> Tokenizer:
    """A byte-level BPE with only a few merges, trained on ASCII: every accented letter, curly
    quote and emoji is two to four single-byte tokens."""
    hf = train_bpe(["the cat sat on the mat, said the man. " * 50], vocab_size=280)
    return Tokenizer(hf, fingerprint="splitting")


def generator_for(make_gpt, tokenizer: Tokenizer, **overrides) -> Generator:
    return Generator(make_gpt(vocab_size=tokenizer.vocab_size, **overrides), tokenizer)


def reference_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding without a cache: the whole visible window through the model at every step,
    the window following the generator's rule (last max_seq_len of the prompt; when full, keep the last half)."""
    T = model.config.max_seq_len
    window, out = list(prompt[-T:]), []
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([window]))
            out.append(int(logits[0, -1].argmax()))
            window.append(out[-1])
            if len(window) > T:
                window = window[-(T // 2):]
    return out


def test_cached_greedy_equals_uncached_within_the_context(make_gpt, greedy, splitting_tokenizer):
    generator = generator_for(make_gpt, splitting_tokenizer)
    prompt = splitting_tokenizer.encode("the cat sat")
    n = generator.context - len(prompt)  # fills the context exactly: no sliding yet
    got = list(generator.tokens(prompt, Settings(max_new_tokens=n, temperature=0)))
    want, _ = greedy(generator.model, prompt, n, use_cache=False)
    assert got == want


@pytest.mark.parametrize("prompt_len", [1, 5, 31, 32, 33, 80])
def test_cached_greedy_equals_uncached_past_the_context(make_gpt, splitting_tokenizer, prompt_len):
    """Generation slides its window several times (context 32, 100 new tokens), prompts shorter
    than, as long as and longer than the context."""
    generator = generator_for(make_gpt, splitting_tokenizer, seed=1)
    prompt = torch.randint(0, splitting_tokenizer.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(
        prompt_len)).tolist()
    got = list(generator.tokens(prompt, Settings(max_new_tokens=100, temperature=0)))
    assert got == reference_greedy(generator.model, prompt, 100)


def test_a_long_prompt_keeps_its_last_tokens(make_gpt, splitting_tokenizer):
    generator = generator_for(make_gpt, splitting_tokenizer)
    text = "the man sat on the mat " * 20
    ids = splitting_tokenizer.encode(text)
    assert len(ids) > generator.context
    out = generator.generate(text, Settings(max_new_tokens=10, temperature=0, stop_at_eot=False))
    assert (out.prompt_tokens, out.prompt_tokens_dropped) == (generator.context, len(ids) - generator.context)
    greedy = Settings(max_new_tokens=10, temperature=0)
    assert list(generator.tokens(ids, greedy)) == list(generator.tokens(ids[-generator.context:], greedy))


def test_same_seed_same_text_other_seed_other_text(make_gpt, splitting_tokenizer):
    generator = generator_for(make_gpt, splitting_tokenizer)
    run = lambda seed: list(generator.tokens([5, 6, 7], Settings(max_new_tokens=40, temperature=1.0, seed=seed)))  # noqa: E731
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_without_a_seed_each_generation_draws_one_and_reports_it(make_gpt, splitting_tokenizer):
    generator = generator_for(make_gpt, splitting_tokenizer)
    first = generator.generate("the cat", Settings(max_new_tokens=20, temperature=1.0, stop_at_eot=False))
    second = generator.generate("the cat", Settings(max_new_tokens=20, temperature=1.0, stop_at_eot=False))
    assert first.seed != second.seed
    replay = generator.generate("the cat", Settings(max_new_tokens=20, temperature=1.0, stop_at_eot=False,
                                                 seed=first.seed))
    assert replay.text == first.text


def test_top_k_1_and_a_tiny_top_p_are_greedy(make_gpt, splitting_tokenizer):
    generator = generator_for(make_gpt, splitting_tokenizer)
    greedy = list(generator.tokens([3, 4], Settings(max_new_tokens=30, temperature=0)))
    assert list(generator.tokens([3, 4], Settings(max_new_tokens=30, temperature=2.0, top_k=1, seed=0))) == greedy
    assert list(generator.tokens([3, 4], Settings(max_new_tokens=30, temperature=2.0, top_k=0, top_p=1e-6,
                                               seed=0))) == greedy


def draws(logits: list[float], n: int = 300, seen: list[int] = (), **kw) -> set[int]:
    logits = torch.tensor(logits)
    mask = torch.zeros(len(logits), dtype=torch.bool)
    mask[list(seen)] = True
    generator = torch.Generator().manual_seed(0)
    s = Settings(**{"top_k": 0, "top_p": 1.0, "temperature": 1.0, **kw})
    return {int(sample(logits, s, mask, generator)) for _ in range(n)}


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().tolist()
    assert draws(logits, top_p=0.6) == {0, 1}  # 0.5 < 0.6, so the second is needed; 0.8 >= 0.6, so no third
    assert draws(logits, top_p=0.5) == {0}
    assert draws(logits, top_p=0.9) == {0, 1, 2}
    assert draws(logits) == {0, 1, 2, 3}


def test_top_k_keeps_the_k_likeliest():
    assert draws([0.0, 3.0, 1.0, 2.0], top_k=2) == {1, 3}


def test_repetition_penalty_pushes_seen_tokens_down():
    # token 0 leads; penalised by 4 its logit 2 becomes 0.5, below token 1's 1.0.
    assert draws([2.0, 1.0, -1.0], temperature=0, repetition_penalty=4.0, seen=[0]) == {1}
    # a negative logit is multiplied, so it drops further instead of rising towards 0.
    assert draws([-1.0, -2.0], temperature=0, repetition_penalty=4.0, seen=[0]) == {1}
    assert draws([2.0, 1.0, -1.0], temperature=0, repetition_penalty=4.0, seen=[1]) == {0}


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5),
                                 dict(repetition_penalty=0.0), dict(max_new_tokens=0)])
def test_out_of_range_settings_are_refused_clearly(bad):
    name = next(iter(bad)).replace("_", " ").replace("top ", "top-")
    with pytest.raises(UserError, match=f"(?i)^{name} must"):
        Settings(**bad)


def test_empty_prompt_is_a_user_error(make_gpt, splitting_tokenizer):
    generator = generator_for(make_gpt, splitting_tokenizer)
    with pytest.raises(UserError, match="prompt is empty"):
        generator.generate("", Settings())


def test_thread_count_is_restored(make_gpt, splitting_tokenizer):
    generator = generator_for(make_gpt, splitting_tokenizer)
    before = torch.get_num_threads()
    for i, _ in enumerate(generator.stream("the cat", Settings(max_new_tokens=20, stop_at_eot=False))):
        if i == 2:
            break  # a consumer that stops early (as Ctrl-C does) closes the generator
    assert torch.get_num_threads() == before
    torch.set_num_threads(2)
    generator.generate("the cat", Settings(max_new_tokens=5))
    assert torch.get_num_threads() == 2


# --- streaming ------------------------------------------------------------------------------------------


def stream_tokens(tokenizer: Tokenizer, ids: list[int], stop: tuple[str, ...] = ()) -> list[str]:
    text = TextStream(stop, tokenizer.spaced)
    pieces = [text.push(tokenizer.token_bytes(i)) for i in ids]
    return [p for p in pieces + [text.finish()] if p]


def test_the_test_tokenizer_really_splits_characters(splitting_tokenizer):
    ids = splitting_tokenizer.encode(MULTI_BYTE)
    broken = [i for i in ids if not _decodes(splitting_tokenizer.token_bytes(i))]
    assert len(broken) > 20


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_multi_byte_characters_stream_whole(splitting_tokenizer):
    pieces = stream_tokens(splitting_tokenizer, splitting_tokenizer.encode(MULTI_BYTE))
    assert "".join(pieces) == MULTI_BYTE
    assert all("\ufffd" not in p for p in pieces)
    assert len(pieces) > 10  # it did stream, piece by piece


@given(st.text(max_size=60))
@settings(max_examples=150, deadline=None)
def test_any_text_streams_back_exactly(splitting_tokenizer, text):
    pieces = stream_tokens(splitting_tokenizer, splitting_tokenizer.encode(text))
    assert "".join(pieces) == text
    for piece in pieces:  # each piece is whole characters: it survives a UTF-8 round trip on its own
        assert piece.encode("utf-8").decode("utf-8") == piece


@given(st.lists(st.sampled_from(["\n", " ", "\n ", "“", "“ ", "the", " cat", "\n\n", "\t", "é"]) |
                st.text(max_size=4)).map("".join))
@settings(max_examples=150, deadline=None)
def test_text_streams_back_without_the_tokenizers_spaces(small_tokenizer, text):
    """The tokenizer writes a space after each newline and opening quotation mark (real merges hold it:
    "\n ", "\n \n "); the stream takes it out again, also where the character and its space arrive in
    different tokens."""
    assert "".join(stream_tokens(small_tokenizer, small_tokenizer.encode(text))) == text


def test_after_a_prompt_ending_in_a_newline_the_first_word_streams_without_the_written_space(
        make_gpt, small_tokenizer, monkeypatch):
    """The prompt "said\n" leaves the written space to the next word (Tokenizer.encode_prompt): the model's
    " the" must show as "the", right after the newline."""
    generator = generator_for(make_gpt, small_tokenizer)
    ids = small_tokenizer.encode(" the Queen")
    seen = {}
    monkeypatch.setattr(generator, "tokens", lambda prompt_ids, settings, stats=None: seen.update(p=prompt_ids) or iter(ids))
    assert "".join(generator.stream("said\n", Settings(max_new_tokens=len(ids)))) == "the Queen"
    assert small_tokenizer.decode(seen["p"] + ids) == "said\nthe Queen"


def test_the_engine_streams_multi_byte_text_unbroken(make_gpt, splitting_tokenizer, monkeypatch):
    """The generator's own stream, with the model's choices replaced by the tokens of a known text."""
    generator = generator_for(make_gpt, splitting_tokenizer)
    ids = splitting_tokenizer.encode(MULTI_BYTE)
    monkeypatch.setattr(generator, "tokens", lambda prompt_ids, settings, stats=None: iter(ids))
    pieces = list(generator.stream("the", Settings(max_new_tokens=len(ids))))
    assert "".join(pieces) == MULTI_BYTE and generator.last.text == MULTI_BYTE
    assert all("\ufffd" not in p for p in pieces)


def test_invalid_bytes_become_a_replacement_character_not_an_error():
    text = TextStream()
    assert text.push(b"a\xff") == "a\ufffd"
    assert text.push(b"\xe2\x80") == ""  # the start of a 3-byte character: held back
    assert text.finish() == "\ufffd"  # it never finished


# --- stop strings ---------------------------------------------------------------------------------------


@given(st.text(alphabet="ab\n.é", max_size=30), st.text(alphabet="ab\n.é", min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_stop_string_ends_the_text_before_it(text, stop):
    stream = TextStream((stop,))
    released = ""
    for ch in text:
        released += stream.push(ch.encode())
        assert stop not in released  # the stop string is never shown, not even in part before it is ruled out
    released += stream.finish()
    assert released == (text[: text.index(stop)] if stop in text else text)


def test_stop_string_through_the_engine(make_gpt, splitting_tokenizer, monkeypatch):
    generator = generator_for(make_gpt, splitting_tokenizer)
    ids = splitting_tokenizer.encode("the cat sat.\n\nthe end")
    monkeypatch.setattr(generator, "tokens", lambda prompt_ids, settings, stats=None: iter(ids))
    out = generator.generate("x", Settings(stop=("\n\n",)))
    assert out.text == "the cat sat." and out.stop_reason == "stop"


def test_end_of_text_token_ends_the_generation(make_gpt, splitting_tokenizer, monkeypatch):
    generator = generator_for(make_gpt, splitting_tokenizer)
    ids = splitting_tokenizer.encode("the end") + [splitting_tokenizer.eot_id] + splitting_tokenizer.encode("more")
    monkeypatch.setattr(generator, "tokens", lambda prompt_ids, settings, stats=None: iter(ids))
    out = generator.generate("x", Settings())
    assert out.text == "the end" and out.stop_reason == "eot"
