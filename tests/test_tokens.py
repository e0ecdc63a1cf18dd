"""Exact token counts: quicktok equals tiktoken (built offline), model names map to the right encoding."""

from __future__ import annotations

import pytest

from tunewise import tokens
from tunewise.errors import NotFound, UsageError

CORPUS = [
    "",
    "hello world",
    "Hello, World! It's 3.14159 o'clock; we'll see. DON'T SHOUT",
    "Grüße aus München — naïve café, Ångström, façade",
    "Здравствуйте, как дела? Привет мир",
    "مرحبا بالعالم، كيف حالك؟",
    "שלום עולם",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "สวัสดีชาวโลก",
    "Γειά σου Κόσμε",
    "日本語のテキストです。東京タワーは333メートル。",
    "中文文本：你好，世界！这是一个测试。",
    "한국어 텍스트입니다. 안녕하세요 세계",
    "emoji 🚀🔥👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 flags 🇯🇵🇫🇷 ❤️",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; } /* C */ // done\r\n",
    '{"items": [{"name": "Coffee", "price": 4.50}], "total": 7.5}',
    "   leading spaces and trailing spaces   ",
    "\n\n\n\t\t\t   \r\n  \n",
    " " * 257,
    "a" * 5000,
    "ab" * 3000 + "!" * 1000,
    "1234567890" * 50,
    "https://example.com/path?query=1&b=%20x#frag user@example.org",
    "<|endoftext|> is only text here, <|im_start|> too",
    "mixed: résumé 履歴書 résumé123 ABCdef GHI'S they'RE",
    "\u200b\u200d\ufeff zero width and BOM",
    "tab\tseparated\tvalues\n1\t2\t3",
    "a lone surrogate \ud800 from a JSON escape",
]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_quicktok_counts_equal_tiktoken(name):
    fast, ref = tokens.get_encoding(name), tokens.reference_encoding(name)
    for text in CORPUS:
        expected = ref.encode_ordinary(text)
        assert fast.encode_ordinary(text) == expected, text[:40]
        assert fast.count(text) == len(expected), text[:40]
        assert fast.decode(expected) == ref.decode(expected)
    assert fast.count_batch(CORPUS) == [len(ref.encode_ordinary(t)) for t in CORPUS]


def test_reference_is_a_real_tiktoken_encoding():
    import tiktoken

    ref = tokens.reference_encoding("o200k_base")
    assert isinstance(ref, tiktoken.Encoding)
    assert ref.n_vocab == 200019
    assert ref.encode("<|endoftext|>", allowed_special="all") == [199999]
    with pytest.raises(UsageError):
        tokens.reference_encoding("p50k_base")


@pytest.mark.parametrize("model,encoding", [
    ("gpt-4o-mini", "o200k_base"),
    ("gpt-4o-2024-08-06", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"),
    ("o3-mini", "o200k_base"),
    ("o4-mini-2025-04-16", "o200k_base"),
    ("o1", "o200k_base"),
    ("ft:gpt-4.1-mini-2025-04-14:acme::B1x2y3", "o200k_base"),
    ("ft:gpt-4o-mini-2024-07-18:acme:receipts:9abc:ckpt-step-40", "o200k_base"),
    ("gpt-3.5-turbo", "cl100k_base"),
    ("ft:gpt-3.5-turbo-0125:acme::xyz", "cl100k_base"),
    ("gpt-4-turbo", "cl100k_base"),
    ("gpt-4", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
    ("smollm2-135m-instruct", "hf:smollm2-135m-instruct"),
])
def test_encoding_name_for_model(model, encoding):
    assert tokens.encoding_name_for_model(model) == encoding


def test_ft_names_differ_from_tiktoken_prefix_table():
    """tiktoken maps ft:gpt-4.1-mini... to cl100k_base through its 'ft:gpt-4' prefix; the catalog does not."""
    assert tokens.encoding_name_for_model("ft:gpt-4.1-mini-2025-04-14:org::id") == "o200k_base"


def test_unknown_model_and_encoding():
    with pytest.raises(NotFound):
        tokens.encoding_name_for_model("llama-7b")
    with pytest.raises(UsageError):
        tokens.get_encoding("r50k_base")


def test_count_text_uses_model_encoding():
    text = "日本語のテキストです。"
    assert tokens.count_text(text, "gpt-4o-mini") == len(tokens.reference_encoding("o200k_base").encode(text))
    assert tokens.count_text(text, "gpt-3.5-turbo") == len(tokens.reference_encoding("cl100k_base").encode(text))
    assert tokens.count_text(text, encoding="cl100k_base") == tokens.count_text(text, "gpt-4")
    # special-token strings are counted as plain text, as OpenAI bills them
    assert tokens.count_text("<|endoftext|>") > 1


def test_count_messages_follows_openai_recipe():
    ref = tokens.reference_encoding("o200k_base")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi there", "name": "alice"},
        {"role": "assistant", "content": "Hello."},
    ]
    expected = 3  # reply primer
    for m in messages:
        expected += 3 + sum(len(ref.encode(v)) for v in m.values()) + (1 if "name" in m else 0)
    assert tokens.count_messages(messages, "gpt-4o-mini") == expected
    # content parts count by their text; tool calls by function name and arguments
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]
    assert tokens.count_messages(parts) == 3 + 3 + len(ref.encode("user")) + len(ref.encode("Hi there"))
    call = [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}]
    assert tokens.count_messages(call) == 6 + sum(len(ref.encode(s)) for s in ("assistant", "f", "{\"x\": 1}"))


def test_local_model_counts_with_its_own_tokenizer():
    from tunewise import models

    tok = models.load_tokenizer(models.TINY_MODEL)
    text = "Coffee - $4.50, Bagel - $3.00"
    assert tokens.count_text(text, models.TINY_MODEL) == len(tok.encode(text, add_special_tokens=False))
    directory = models.local_dir(models.TINY_MODEL)
    assert tokens.encoding_name_for_model(str(directory)) == f"hf:{directory}"
    assert tokens.count_text(text, str(directory)) == tokens.count_text(text, models.TINY_MODEL)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert tokens.count_messages(messages, models.TINY_MODEL) == len(tok.encode(rendered, add_special_tokens=False))
