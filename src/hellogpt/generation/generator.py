"""Generation: continue a prompt one token at a time, streaming text as it comes.

    prompt --encode--> ids --prefill (one forward pass fills the KV cache)--> logits
    loop:  logits --sample--> next id --stream its bytes--> text
           next id --decode step (one token through the model, attends to the cache)--> logits

Sampling, in the order applied: repetition penalty (CTRL's: divide a positive logit of a token
seen before by the penalty, multiply a negative one), temperature (0 = always the likeliest
token, "greedy"), top-k (keep the k likeliest), top-p (keep the smallest set whose probability
reaches p), then draw one token from what is left with the generator's seeded random numbers.

The context window: the model knows positions 0..max_seq_len-1, so a longer prompt keeps its
last max_seq_len tokens. When generation fills the window, the cache cannot simply slide (every
cached key was computed at its absolute position), so the generator keeps the last half of the
window, resets the cache and prefills those tokens again. Refilling half a window, rather than a
full one at every step, costs one prefill per max_seq_len/2 new tokens and always leaves the
model at least max_seq_len/2 tokens of context.

Streaming: byte-level BPE can split one character (é, “, an emoji) across tokens. The bytes of
each token go through an incremental UTF-8 decoder, which returns only complete characters and
holds back the start of an unfinished one, so no half character is ever printed. Text that could
be the beginning of a stop string is held back as well, until it is clear whether it is one.

"""

from __future__ import annotations

import codecs
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from hellogpt.core.device import pick_device
from hellogpt.core.errors import UserError
from hellogpt.core.settings import SEED_LIMIT
from hellogpt.model.checkpoint import Located, load_for_inference
from hellogpt.model.gpt import GPT, KVCache

GREEDY_BELOW = 1e-5  # a temperature this small is greedy: dividing by it would overflow the logits


@dataclass
class Settings:
    """How to sample. The defaults are `hellogpt generate`'s (see cli._add_generation_flags)."""

    max_new_tokens: int = 200
    temperature: float = 0.8  # 0 (or under GREEDY_BELOW): greedy
    top_k: int = 50  # 0: off
    top_p: float = 0.95  # 1.0: off
    repetition_penalty: float = 1.0  # 1.0: off
    stop: tuple[str, ...] = ()  # generation ends before the first of these strings
    seed: int | None = None  # None: a fresh random seed for every generation
    stop_at_eot: bool = True  # <|endoftext|> ends the text (benchmarks turn this off to time a fixed length)

    def __post_init__(self):
        self.stop = tuple(s for s in self.stop if s)
        checks = [
            (self.max_new_tokens >= 1, f"max new tokens must be at least 1 (got {self.max_new_tokens})"),
            (0 <= self.temperature < math.inf, f"temperature must be 0 (greedy) or more, finite (got "
                                               f"{self.temperature})"),
            (self.top_k >= 0, f"top-k must be 0 (off) or more (got {self.top_k})"),
            (0 < self.top_p <= 1, f"top-p must be above 0 and at most 1 (1 is off; got {self.top_p})"),
            (0 < self.repetition_penalty < math.inf, f"repetition penalty must be above 0 and finite (1 is off; got "
                                          f"{self.repetition_penalty})"),
            (self.seed is None or 0 <= self.seed < SEED_LIMIT, f"seed must be from 0 to 2**63 - 1 (got {self.seed})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message[0].upper() + message[1:] + ".")


@dataclass
class Generation:
    """What one generation produced, with its counts and timing (`hellogpt generate --json`)."""

    text: str = ""
    prompt_tokens: int = 0  # tokens of the prompt the model saw
    prompt_tokens_dropped: int = 0  # tokens cut from the start of a prompt longer than the context
    new_tokens: int = 0
    stop_reason: str = ""  # "max_new_tokens", "stop", "eot" or "interrupted"
    prefill_seconds: float = 0.0
    seconds: float = 0.0  # prefill and every decode step, sampling and streaming included
    seed: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


class TextStream:
    """Token bytes in, printable text out: only complete UTF-8 characters, and never the start
    of a stop string before it is known not to be one."""

    def __init__(self, stop: tuple[str, ...] = (), spaced: tuple[str, ...] = (), after_spaced: bool = False):
        # "replace" only ever applies to bytes that can never become valid UTF-8; an unfinished
        # character at the end is held back until its remaining bytes arrive.
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = stop
        self.spaced = spaced  # the characters after which the tokenizer wrote a space, to be taken out
        self.after_spaced = after_spaced  # the text so far (the prompt, at first) ends with one of them
        self.pending = ""  # decoded text not yet released (it may begin a stop string)
        self.text = ""  # all text released so far
        self.stopped = False

    def push(self, data: bytes, final: bool = False) -> str:
        """Feed bytes; return the text that is now safe to show."""
        if self.stopped:
            return ""
        self.pending += self._without_spaces(self.decoder.decode(data, final=final))
        release = len(self.pending)
        for stop in self.stop:
            at = self.pending.find(stop)
            if at != -1:
                self.stopped = True
                release = min(release, at)
        if self.stopped:
            self.pending = self.pending[:release]
        elif not final:
            release -= self._held_back()
        out, self.pending = self.pending[:release], self.pending[release:]
        self.text += out
        return out

    def _without_spaces(self, text: str) -> str:
        """As the tokenizer's decoder does it, but across pieces: the space just after each spaced character
        goes, also when that character ended the previous piece."""
        if not (self.spaced and text):
            return text
        ends_spaced = text.endswith(self.spaced)
        if self.after_spaced and text.startswith(" "):
            text = text[1:]
        self.after_spaced = ends_spaced
        for ch in self.spaced:
            text = text.replace(ch + " ", ch)
        return text

    def finish(self) -> str:
        """Flush at the end: an unfinished character becomes U+FFFD, held-back text is released."""
        return self.push(b"", final=True)

    def _held_back(self) -> int:
        """Length of the longest end of `pending` that is the beginning of a stop string."""
        longest = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest


class Generator:
    """A model and its tokenizer, ready to continue prompts (batch 1, KV-cached)."""

    def __init__(self, model: GPT, tokenizer, device="cpu", threads: int | None = 1):
        self.model = model.eval()
        # CPU threads while generating. At batch 1 every matrix product is small: splitting it across
        # cores costs more in synchronisation than it saves, and on a busy machine far more
        # (benchmarks/generate_speed.py measures both). None: leave torch's setting alone.
        self.threads = threads
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.context = model.config.max_seq_len
        self.cache = KVCache(model.config, batch_size=1, device=self.device)  # allocated once, reused
        self.rng = torch.Generator(device=self.device)
        self.last = Generation()  # the stats of the latest (or current) generation

    def stream(self, prompt: str, settings: Settings) -> Iterator[str]:
        """Yield the continuation of `prompt` piece by piece; `self.last` holds the stats."""
        ids = self.tokenizer.encode_prompt(prompt)
        if not ids:
            raise UserError("The prompt is empty: type some text for the model to continue, e.g. \"Elizabeth\".")
        self.last = stats = Generation()
        text = TextStream(settings.stop, self.tokenizer.spaced, after_spaced=prompt.endswith(self.tokenizer.spaced))
        started = time.perf_counter()
        try:
            for token in self.tokens(ids, settings, stats):
                if token == self.tokenizer.eot_id and settings.stop_at_eot:
                    stats.stop_reason = "eot"
                    break
                piece = text.push(self.tokenizer.token_bytes(token))
                stats.new_tokens += 1
                stats.seconds = time.perf_counter() - started
                if piece:
                    yield piece
                if text.stopped:
                    stats.stop_reason = "stop"
                    break
            else:
                stats.stop_reason = "max_new_tokens"
            if piece := text.finish():
                yield piece
        except (KeyboardInterrupt, GeneratorExit):
            stats.stop_reason = "interrupted"
            raise
        finally:
            stats.text = text.text
            stats.seconds = time.perf_counter() - started

    def generate(self, prompt: str, settings: Settings) -> Generation:
        """The whole continuation at once."""
        for _ in self.stream(prompt, settings):
            pass
        return self.last

    @torch.inference_mode()
    def tokens(self, prompt_ids: list[int], settings: Settings, stats: Generation | None = None) -> Iterator[int]:
        """The decode loop: yield new token ids (at most max_new_tokens), prompt_ids unchanged."""
        stats = stats or Generation()
        stats.seed = self._seed(settings)
        stats.prompt_tokens_dropped = max(0, len(prompt_ids) - self.context)
        window = list(prompt_ids[-self.context:])  # the tokens the cache stands for, in order
        stats.prompt_tokens = len(window)
        penalty = settings.repetition_penalty
        seen = torch.zeros(self.model.config.vocab_size, dtype=torch.bool, device=self.device)  # (V,)
        if penalty != 1.0:
            seen[torch.tensor(prompt_ids, device=self.device)] = True
        self.rng.manual_seed(stats.seed)

        threads = torch.get_num_threads()
        if self.device.type == "cpu" and self.threads:
            torch.set_num_threads(self.threads)
        try:
            started = time.perf_counter()
            logits = self._prefill(window)  # (V,)
            stats.prefill_seconds = time.perf_counter() - started
            for _ in range(settings.max_new_tokens):
                next_id = sample(logits, settings, seen, self.rng)  # (1,)
                token = int(next_id)
                yield token
                if penalty != 1.0:
                    seen[next_id] = True
                window.append(token)
                if len(window) > self.context:  # the window is full: keep its last half, refill the cache
                    window = window[-max(1, self.context // 2):]
                    logits = self._prefill(window)
                else:
                    logits = self.model(next_id.view(1, 1), kv_cache=self.cache)[0][0, -1]  # (V,)
        finally:
            torch.set_num_threads(threads)

    def _prefill(self, ids: list[int]) -> torch.Tensor:
        """Reset the cache, run `ids` through the model at once; the logits (V,) after the last one."""
        self.cache.reset()
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)
        return self.model(idx, kv_cache=self.cache)[0][0, -1]

    def _seed(self, settings: Settings) -> int:
        if settings.seed is not None:
            return settings.seed
        return int(torch.randint(0, 2**31 - 1, (1,)).item())  # a fresh one, reported so it can be replayed


def sample(logits: torch.Tensor, settings: Settings, seen: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token id (1,) drawn from logits (V,). The work after top-k runs on k values, not V."""
    if settings.repetition_penalty != 1.0:
        penalised = torch.where(logits > 0, logits / settings.repetition_penalty, logits * settings.repetition_penalty)
        logits = torch.where(seen, penalised, logits)  # (V,)
    if settings.temperature < GREEDY_BELOW:
        return logits.argmax().view(1)
    if 0 < settings.top_k < logits.size(0):
        logits, ids = torch.topk(logits, settings.top_k)  # (k,) each, likeliest first
    else:
        logits, ids = torch.sort(logits, descending=True)  # (V,) each
    probs = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        # Drop every token whose likelier neighbours already reach top_p (the likeliest always stays).
        drop = torch.cumsum(probs, dim=-1) - probs >= settings.top_p
        drop[0] = False  # also when top_p rounds to 0 in the logits' precision
        probs = probs.masked_fill(drop, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)  # (1,); multinomial rescales to sum 1
    return ids[choice]


def load_generator(home, model_name: str, serial: int | None = None) -> tuple["Generator", dict, Located]:
    """(generator, checkpoint, Located) for a trained model: the latest serial unless one is named."""
    device = pick_device()
    model, tokenizer, ckpt, where = load_for_inference(home, model_name, serial, device)
    return Generator(model, tokenizer, device), ckpt, where
