"""``validate``: every finding in a chat fine-tuning JSONL file, and its token statistics, in one streamed pass.

Each line is parsed once (msgspec, else jiter; the stdlib only explains the lines that fail), checked
against the rules, and its strings counted exactly by quicktok; a system prompt seen before is counted once.
The common example (plain system, user and assistant messages with text content) takes one fused pass
that checks, counts and records it; anything else goes through every rule in ``rules.py``. Local models count each example through their own chat template instead. The data-set
checks (duplicates, system prompts, answer formats, sizes) run at the end on what the pass collected.
Big files can be split at line ends across worker processes; their results merge into the same report.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import threading
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from tunewise.catalog import (
    CHAT,
    DATA_FORMATS,
    PREFERENCE,
    PROMPT_COMPLETION,
    REINFORCEMENT,
    ModelInfo,
    load_catalog,
)
from tunewise.data.reading import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    TO_JSONL_ARRAY,
    TO_JSONL_OBJECT,
    JSONLimitError,
    decode_line,
    escape_nested_json,
    fallback_loads,
    is_json,
    iter_examples,
    open_checked,
    plain_reason,
    raw_lines,
    shallow,
    strict_loads,
    type_name,
    unchecked_loads,
    utf16_bom,
)
from tunewise.data.report import CODES, Finding, Report, Stats, Summary
from tunewise.data.rules import (
    ExampleInfo,
    check_example,
    check_preference,
    check_prompt_completion,
    check_reinforcement,
    example_format,
)
from tunewise.errors import DataError, UsageError
from tunewise.tokens import (
    REPLY_PRIMER,
    TOKENS_PER_MESSAGE,
    HFEncoding,
    QuicktokEncoding,
    get_encoding,
    message_texts,
    tools_text,
)

try:  # a line's identity for the duplicate check: 128-bit XXH3, about 15x faster than blake2b on a line
    from xxhash import xxh3_128_digest as _digest
except ImportError:  # pragma: no cover - the same findings, slower
    def _digest(raw: bytes) -> bytes:
        return hashlib.blake2b(raw, digest_size=16).digest()

DEFAULT_MODEL = "gpt-4o-mini"
MIN_EXAMPLES = 10  # OpenAI refuses a training file with fewer examples
# The guide's size bands: "50 examples to see improvement, 100-500 for solid results, 1000+ for maximum
# performance on complex tasks".
BAND_IMPROVEMENT, BAND_SOLID, BAND_COMPLEX = 50, 100, 1000
OUTLIER_SHARE = 0.2  # answers in a format used by at most this share of examples are outliers
OUTLIER_MIN_EXAMPLES = 5
MAX_SYSTEM_PROMPTS = 1000  # beyond this many distinct prompts the variety is deliberate: stop tracking
BATCH = 256  # a local model's examples whose assistant texts are tokenized together
CACHE_LIMIT = 200_000  # counted strings remembered (then forgotten, to bound memory)
# File bytes per worker process. A spawned process pays for Python, the imports and loading the encoding
# (about 0.3 s on an idle core, seconds on a busy one) before it counts a token; a forked one starts in
# milliseconds with the encoding already loaded.
PARALLEL_MIN_BYTES = 64 << 20
PARALLEL_MIN_BYTES_FORK = 8 << 20
MAX_WORKERS = 16
LIMIT_HINTS = {
    "json_too_deep": f"A chat example needs a few levels; flatten the data (at most {MAX_JSON_DEPTH} levels).",
    "number_too_long": f"Write such a number as a string (at most {MAX_INT_DIGITS} digits as a number).",
}


def size_band(n: int) -> str:
    if n < BAND_IMPROVEMENT:
        return "under 50: little improvement expected"
    if n < BAND_SOLID:
        return "50-99: some improvement expected; 100-500 gives solid results"
    if n < BAND_COMPLEX:
        return "100-999: solid results expected"
    return "1000+: enough for complex tasks"


def _lines_text(lines: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


class _Validator:
    """The state of one pass over (a part of) a file: findings so far, and what the data-set checks and the
    statistics need. ``read`` fills it, ``merge`` appends the next part's, ``finish`` makes the report."""

    def __init__(self, path: str, info: ModelInfo, data_format: str | None = None,
                 item_fields: tuple[str, ...] = ()) -> None:
        self.path = path
        self.model = info
        self.format = data_format or info.training_format
        self.pc = self.format == PROMPT_COMPLETION
        self.preference = self.format == PREFERENCE
        self.reinforcement = self.format == REINFORCEMENT
        self.item_fields = tuple(item_fields)  # reinforcement: the fields the grader reads
        self.wrong_format: list[int] = []  # lines in the other format than the one this file is checked in
        self.wrong_preference: list[int] = []  # those of them in the preference format
        self.enc = get_encoding(info.encoding)
        self.hf = isinstance(self.enc, HFEncoding)
        # The fused pass for plain chat examples (supervised chat, quicktok): the role names' tokens, and
        # quicktok's own count (one call less per string than the wrapper, which also handles lone surrogates).
        self.plain = self.format == CHAT and isinstance(self.enc, QuicktokEncoding)
        self.role_tokens = {role: self.enc.count(role) for role in ("system", "user", "assistant")} \
            if self.plain else {}
        self.raw_count = self.enc._enc.count if self.plain else None
        self.findings: list[Finding] = []
        self.blank_lines: list[int] = []
        self.seen: dict[bytes, int] = {}  # digest of the line -> first line with it
        self.duplicates: dict[bytes, list[int]] = {}  # digest -> every line with those bytes (2 or more)
        self.no_system: list[int] = []
        self.no_user: list[int] = []
        self.prompts: dict[str, list[int]] = {}
        self.n_with_prompt = 0
        self.answer_format: dict[str, list[int]] = {"json": [], "text": []}
        self.pending: list[tuple[int, ExampleInfo]] = []
        self.cache: dict[str, int] = {}
        self.example_lines: list[int] = []
        self.n_messages: list[int] = []
        self.totals: list[int] = []
        self.assistant: list[int] = []
        self.truncated: list[tuple[int, int]] = []  # (line, tokens): over the limit, an answer still fits
        self.too_long: list[tuple[int, int, int | None]] = []  # (line, tokens, answer start): nothing fits
        self.fatal = False  # the file is not JSONL at all: nothing after the first finding means anything

    def add(self, code: str, line: int | None, message: str, hint: str = "",
            lines: list[int] | None = None) -> None:
        severity = CODES[code][0]
        self.findings.append(Finding(code, severity, line, message, hint,
                                     lines if lines is not None else ([line] if line is not None else [])))

    # -- reading -----------------------------------------------------------------------------------------
    def read(self, start: int = 0, end: int | None = None, first_line: int = 1) -> _Validator:
        """Check the lines in bytes [start, end) of the file; the first of them is line ``first_line``."""
        with open_checked(self.path) as fh:
            if start == 0:
                encoding = utf16_bom(fh.peek(4)[:4])
                if encoding:
                    self.add("not_utf8", None, f"the file is {encoding}, not UTF-8.",
                             "Re-save it as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8.jsonl`.")
                    self.fatal = True
                    return self
            fh.seek(start)
            first = start == 0  # only the file's first line can reveal a pretty-printed JSON document
            plain, plain_chat = self.plain, self.plain_chat
            for number, raw in raw_lines(fh, first_line, end - start if end is not None else None):
                if not raw or raw.isspace():
                    self.blank_lines.append(number)
                    continue
                example = _UNREAD
                if unchecked_loads is not None:
                    try:
                        example = unchecked_loads(raw)
                    except (ValueError, RecursionError):
                        pass
                    else:
                        # A plain chat example is three levels deep: msgspec's value is the one to take.
                        if plain and type(example) is dict and plain_chat(number, raw, example):
                            first = False
                            continue
                        if not shallow(raw):
                            example = _UNREAD  # maybe nested past the limit: jiter and the stdlib decide
                try:
                    if example is _UNREAD:
                        example = fallback_loads(raw)
                except ValueError:  # the slow path names the problem: bad UTF-8, bad JSON (and where)
                    line = decode_line(number, raw)
                    text = line.text
                    if text is None:
                        self.add("invalid_utf8", number, f"the line is not valid UTF-8 at {line.utf8_error}.",
                                 "Save the file as UTF-8.")
                        first = False
                        continue
                    if text.isspace():
                        self.blank_lines.append(number)
                        continue
                    try:
                        example = strict_loads(text)
                    except JSONLimitError as exc:
                        self.add(exc.code, number, f"{exc.reason}.", LIMIT_HINTS[exc.code])
                        first = False
                        continue
                    except json.JSONDecodeError as exc:
                        example = self.bad_json(number, text, exc, first)
                        if example is _STOP:
                            self.fatal = True
                            break
                        if example is None:
                            first = False
                            continue
                if first and isinstance(example, list):
                    self.add("not_jsonl", number, "the file is a JSON array on one line, not JSONL.",
                             "Write one example object per line: " + TO_JSONL_ARRAY)
                    self.fatal = True
                    break
                first = False
                if not isinstance(example, dict):
                    self.add("not_object", number, f"the line is {type_name(example)}, not a JSON object.",
                             'Each line must be one example: {"messages": [...]}.')
                    continue
                if plain and plain_chat(number, raw, example):
                    continue
                self.example(number, raw, example)
        self.flush()
        return self

    def merge(self, other: _Validator) -> None:
        """Append the results of the next chunk of the file."""
        self.findings += other.findings
        self.blank_lines += other.blank_lines
        self.wrong_format += other.wrong_format
        self.wrong_preference += other.wrong_preference
        for digest, line in other.seen.items():
            lines = other.duplicates.get(digest, [line])
            if digest in self.seen:
                self.duplicates.setdefault(digest, [self.seen[digest]]).extend(lines)
            else:
                self.seen[digest] = line
                if len(lines) > 1:
                    self.duplicates[digest] = lines
        self.no_system += other.no_system
        self.no_user += other.no_user
        for prompt, lines in other.prompts.items():
            if prompt in self.prompts:
                self.prompts[prompt] += lines
            elif len(self.prompts) < MAX_SYSTEM_PROMPTS:
                self.prompts[prompt] = lines
        self.n_with_prompt += other.n_with_prompt
        for kind, lines in other.answer_format.items():
            self.answer_format[kind] += lines
        self.example_lines += other.example_lines
        self.n_messages += other.n_messages
        self.totals += other.totals
        self.assistant += other.assistant
        self.truncated += other.truncated
        self.too_long += other.too_long

    def bad_json(self, number: int, text: str, exc: json.JSONDecodeError, first: bool):
        if first and "".join(text.split()) in ("[", "{", "[{"):
            # A first line that only opens an array or object: a pretty-printed JSON document. (A long
            # first line that is cut short is just a broken example, reported as invalid JSON below.)
            is_array = text.lstrip().startswith("[")
            self.add("not_jsonl", number, "the file is a pretty-printed JSON " + ("array" if is_array else "object")
                     + " spread over several lines, not JSONL (one example object per line).",
                     TO_JSONL_ARRAY[0].upper() + TO_JSONL_ARRAY[1:] if is_array
                     else TO_JSONL_OBJECT[0].upper() + TO_JSONL_OBJECT[1:])
            return _STOP
        fixed = escape_nested_json(text)
        if fixed is not None:
            self.add("unescaped_nested_json", number, "a string value holds JSON whose quotes are not escaped "
                     f"(the line breaks at column {exc.colno}).",
                     f"Escape the inner quotes as \\\"; `tunewise validate {self.path} --fix OUT` writes a "
                     "repaired copy")
            return json.loads(fixed)
        self.add("invalid_json", number, f"invalid JSON at column {exc.colno}: {plain_reason(exc)}.",
                 "Each line must be one complete JSON object")
        return None

    # -- one example -------------------------------------------------------------------------------------
    def plain_chat(self, number: int, raw: bytes, example: dict) -> bool:
        """Check, count and record a plain chat example in one pass: ``{"messages": [...]}`` alone, each
        message ``{"role": "system"|"user"|"assistant", "content": "non-blank text"}``, one assistant message
        at least, within the context limit. Such an example has no finding of its own (``check_example``
        would emit nothing), so only the data-set checks and the statistics need it. Returns False, having
        changed nothing, for any other example: ``example`` then applies every rule."""
        if len(example) != 1:
            return False
        messages = example.get("messages")
        if type(messages) is not list or not messages:
            return False
        cache, raw_count = self.cache, self.raw_count
        roles = self.role_tokens
        total = REPLY_PRIMER + TOKENS_PER_MESSAGE * len(messages)
        assistant = 0
        answers = []
        system_prompt = None
        has_user = False
        for msg in messages:
            if type(msg) is not dict or len(msg) != 2:
                return False
            content = msg.get("content")
            if type(content) is not str or not content or content.isspace():
                return False
            role = msg.get("role")  # a role of another type equals none of the three
            if role == "assistant":
                try:
                    n = raw_count(content)
                except TypeError:  # a lone surrogate: the wrapper replaces it, as tiktoken does
                    n = self.enc.count(content)
                assistant += n
                answers.append(content)
            elif role == "user":
                try:
                    n = raw_count(content)
                except TypeError:
                    n = self.enc.count(content)
                has_user = True
            elif role == "system":
                if system_prompt is None:
                    system_prompt = content
                n = cache.get(content)  # a system prompt is usually shared: counted once
                if n is None:
                    if len(cache) > CACHE_LIMIT:
                        cache.clear()
                    n = cache[content] = self.enc.count(content)
            else:
                return False
            total += roles[role] + n
        if not answers or total > self.model.context_limit:
            return False  # no answer, or too long: the full checks say so, and where the answer starts
        digest = _digest(raw)
        first = self.seen.setdefault(digest, number)
        if first != number:
            self.duplicates.setdefault(digest, [first]).append(number)
        if system_prompt is None:
            self.no_system.append(number)
        else:
            self.n_with_prompt += 1
            lines = self.prompts.get(system_prompt)
            if lines is not None:
                lines.append(number)
            elif len(self.prompts) < MAX_SYSTEM_PROMPTS:
                self.prompts[system_prompt] = [number]
        if not has_user:
            self.no_user.append(number)
        self.answer_format["json" if all(map(_is_json, answers)) else "text"].append(number)
        self.example_lines.append(number)
        self.n_messages.append(len(messages))
        self.totals.append(total)
        self.assistant.append(assistant)
        return True

    def example(self, number: int, raw: bytes, example: dict) -> None:
        def emit(code: str, message: str, hint: str) -> None:
            self.add(code, number, message, hint)

        fmt = example_format(example)
        if self.reinforcement and fmt == "chat":
            fmt = REINFORCEMENT  # the same messages, ending with the turn to answer
        if fmt not in (None, self.format):
            self.wrong_format.append(number)  # one finding for the file, at the end
            if fmt == PREFERENCE:
                self.wrong_preference.append(number)
            return
        if self.pc:
            self.prompt_completion(number, raw, example, emit)
            return
        if self.reinforcement:
            info = check_reinforcement(example, emit, self.item_fields)
        else:
            info = check_preference(example, emit) if self.preference else check_example(example, emit)
        self.dataset_checks(number, raw, info)
        if info.tools:
            info.texts.append(tools_text(info.tools))
        if self.hf:
            self.pending.append((number, info))
            if len(self.pending) >= BATCH:
                self.flush()
            return
        # Count each distinct string once: the system prompt and the role names repeat in every example.
        # quicktok's count() builds no list of ids; on a shared 2-core machine it beat encode_batch's
        # threads by 1.6x (one thread) to 5x (every thread).
        total = REPLY_PRIMER + TOKENS_PER_MESSAGE * info.n_messages + info.n_names + self.count_texts(info.texts)
        self.record(number, info, total, sum(self.cache[t] for t in info.assistant_texts))

    def count_texts(self, texts: list[str]) -> int:
        """The tokens of these strings, each distinct string counted once per pass (then remembered)."""
        cache, count = self.cache, self.enc.count
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        total = 0
        for text in texts:
            n = cache.get(text)
            if n is None:
                n = cache[text] = count(text)
            total += n
        return total

    def prompt_completion(self, number: int, raw: bytes, example: dict, emit) -> None:
        """A legacy example: OpenAI bills the prompt's and the completion's tokens (no chat overhead), and
        trains on the completion."""
        info = check_prompt_completion(example, emit)
        self.dataset_checks(number, raw, info)
        total = self.count_texts(info.texts)
        completion = self.count_texts(info.assistant_texts)
        self.record(number, info, total, completion, answer_start=total - completion if info.answers else None)

    def dataset_checks(self, number: int, raw: bytes, info: ExampleInfo) -> None:
        """What the data-set checks need from one example: duplicates, system prompts, answer formats."""
        digest = _digest(raw)
        first = self.seen.setdefault(digest, number)
        if first != number:
            self.duplicates.setdefault(digest, [first]).append(number)
        if not info.has_system:
            self.no_system.append(number)
        if not info.has_user:
            self.no_user.append(number)
        if info.system_prompt is not None:
            self.n_with_prompt += 1
            lines = self.prompts.get(info.system_prompt)
            if lines is not None:
                lines.append(number)
            elif len(self.prompts) < MAX_SYSTEM_PROMPTS:
                self.prompts[info.system_prompt] = [number]
        if info.answers:
            self.answer_format["json" if all(map(_is_json, info.answers)) else "text"].append(number)

    def flush(self) -> None:
        """Count the pending examples' tokens (local models: their chat template, a batch at a time)."""
        pending, self.pending = self.pending, []
        if pending:
            self.flush_hf(pending)

    def flush_hf(self, pending: list[tuple[int, ExampleInfo]]) -> None:
        assistant = self.enc.count_batch([t for _, info in pending for t in info.assistant_texts])
        pos = 0
        for number, info in pending:
            n = len(info.assistant_texts)
            try:
                total = self.enc.count_chat(info.messages, info.tools)
                if info.rejected is not None:  # a preference example: the non-preferred answer's tokens too
                    total += sum(self.enc.count_batch(message_texts(info.rejected))) + TOKENS_PER_MESSAGE
            except Exception:  # a template that rejects the shape (tool calls, ...): count the strings
                total = sum(self.enc.count_batch(info.texts)) + TOKENS_PER_MESSAGE * info.n_messages
            self.record(number, info, total, sum(assistant[pos:pos + n]))
            pos += n

    def record(self, number: int, info: ExampleInfo, total: int, assistant: int,
               answer_start: int | None | str = "chat") -> None:
        self.example_lines.append(number)
        self.n_messages.append(info.n_messages)
        self.totals.append(total)
        self.assistant.append(assistant)
        if total > self.model.context_limit:
            start = self.answer_start(info) if answer_start == "chat" else answer_start
            if start is None or start >= self.model.context_limit:
                self.too_long.append((number, total, start))
            else:
                self.truncated.append((number, total))

    def answer_start(self, info: ExampleInfo) -> int | None:
        """The token at which the first trained assistant answer starts (None if there is none)."""
        pos = 0
        for i, msg in enumerate(info.messages):
            if msg["role"] == "assistant" and msg.get("weight", 1) == 1:
                if self.hf:
                    try:
                        return self.enc.count_chat(info.messages[:i]) if i else 0
                    except Exception:  # a template that rejects a partial conversation: assume it fits
                        return 0
                return pos + TOKENS_PER_MESSAGE + self.enc.count("assistant")
            pos += TOKENS_PER_MESSAGE + sum(map(self.enc.count, message_texts(msg))) + ("name" in msg)
        return None

    # -- the data set ------------------------------------------------------------------------------------
    def finish(self) -> Report:
        model = self.model
        n = len(self.totals)
        limit = model.context_limit
        if self.truncated:
            lines = [line for line, _ in self.truncated]
            self.add("truncated", lines[0], f"{len(lines)} example(s) exceed {model.name}'s {limit:,}-token "
                     f"limit per example (longest {max(t for _, t in self.truncated):,} tokens): lines "
                     f"{_lines_text(lines)}; fine-tuning cuts off their end.",
                     "Shorten or split them; only the first tokens up to the limit are trained and billed.", lines)
        for line, tokens, start in self.too_long:
            where = (f"its first trained answer starts at token {start:,}" if start is not None
                     else "it has no trained answer")
            self.add("too_long", line, f"the example has {tokens:,} tokens and {where}; cut at {model.name}'s "
                     f"{limit:,}-token limit it teaches nothing.",
                     "Shorten what comes before the answer, or split the conversation.")
        if self.wrong_format:
            self.format_mismatch()
        if self.blank_lines:
            self.add("blank_line", self.blank_lines[0], f"{len(self.blank_lines)} blank line(s): "
                     f"{_lines_text(self.blank_lines)}.", "Remove them; they are skipped here.", self.blank_lines)
        for lines in self.duplicates.values():
            self.add("duplicate_example", lines[0], f"lines {_lines_text(lines)} are the same example.",
                     "Keep one copy; duplicates weigh the same answer more and waste training tokens.", lines)
        if n and self.no_system:
            self.add("missing_system_message", self.no_system[0], f"{len(self.no_system)} of {n} examples have "
                     f"no system message: lines {_lines_text(self.no_system)}.",
                     "Use the same system prompt in training as at inference.", self.no_system)
        if n and self.no_user:
            self.add("missing_user_message", self.no_user[0], f"{len(self.no_user)} of {n} examples have no "
                     f"user message: lines {_lines_text(self.no_user)}.",
                     "Each example should show the input the model will get.", self.no_user)
        self.check_prompts()
        self.check_answers()
        if n == 0 and not self.fatal and not self.wrong_format:
            self.add("empty_file", None, "the file holds no examples.",
                     'Write one {"messages": [...]} object per line.')
        elif 0 < n < MIN_EXAMPLES:
            self.add("too_few_examples", None, f"{n} example(s); OpenAI needs at least {MIN_EXAMPLES}.",
                     "Add examples: the guide suggests 50 to see improvement, 100-500 for solid results.")
        if 0 < n < BAND_SOLID:
            self.add("small_dataset", None, f"{n} examples: " + size_band(n) + ".",
                     "The guide: 50 examples to see improvement, 100-500 for solid results, 1000+ for complex tasks.")
        self.findings.sort(key=lambda f: (f.line is None, f.line or 0))
        stats = Stats(
            n_examples=n,
            model=model.name,
            encoding=model.encoding,
            messages_per_example=Summary.of(self.n_messages),
            total_tokens_per_example=Summary.of(self.totals),
            assistant_tokens_per_example=Summary.of(self.assistant),
            example_tokens=self.totals,
            billed_tokens_per_epoch=sum(min(t, limit) for t in self.totals),
            context_limit=limit,
            data_format=self.format,
            size_band=size_band(n) if n else "",
        )
        return Report(path=self.path, findings=self.findings, stats=stats)

    def format_mismatch(self) -> None:
        """One error for every line in the other format: which format the model takes, and how to convert."""
        lines, model = self.wrong_format, self.model
        fix = (f"`tunewise validate {self.path} --model {model.name} --fix OUT` writes a converted copy "
               "(see docs/data.md, \"Converting between the formats\")")
        if self.reinforcement:
            self.add("format_for_reinforcement", lines[0],
                     f"{len(lines)} example(s) are not in the reinforcement format ({{\"messages\": [...]}} ending "
                     f"with the turn to answer, plus the fields the grader reads): lines {_lines_text(lines)}.",
                     "Write each example as the conversation to answer (see docs/methods.md, \"Reinforcement\"); "
                     "preference data trains with --method dpo.", lines)
        elif self.preference:
            self.add("chat_format_for_preference", lines[0],
                     f"{len(lines)} example(s) are not in the preference format DPO trains on ({{\"input\": "
                     f"{{\"messages\": [...]}}, \"preferred_output\": [...], \"non_preferred_output\": [...]}}): "
                     f"lines {_lines_text(lines)}.",
                     "Write each example as an input with a preferred and a non-preferred assistant answer "
                     "(see docs/methods.md), or fine-tune with the supervised method instead.", lines)
        elif any(self.preference_lines(lines)):
            self.add("preference_format_for_supervised", lines[0],
                     f"{len(lines)} example(s) are in the preference format (DPO), but the file is checked for "
                     f"supervised fine-tuning: lines {_lines_text(lines)}.",
                     f"Validate it with `tunewise validate {self.path} --method dpo` and train it with "
                     "`--method dpo` (the API: method type \"dpo\").", lines)
        elif self.pc:
            self.add("chat_format_for_prompt_completion_model", lines[0],
                     f"{len(lines)} example(s) are chat ({{\"messages\": [...]}}), but {model.name} is trained on "
                     f"the prompt/completion format ({{\"prompt\": ..., \"completion\": ...}}): lines "
                     f"{_lines_text(lines)}; OpenAI refuses this file for {model.name}.",
                     f"Convert the file: {fix}; or fine-tune a chat model such as gpt-4o-mini.", lines)
        else:
            self.add("prompt_completion_format_for_chat_model", lines[0],
                     f"{len(lines)} example(s) are prompt/completion ({{\"prompt\": ..., \"completion\": ...}}), but "
                     f"{model.name} is trained on the chat format ({{\"messages\": [...]}}): lines "
                     f"{_lines_text(lines)}.",
                     f"Convert the file: {fix}; or fine-tune babbage-002 or davinci-002, which take this format.",
                     lines)

    def preference_lines(self, lines: list[int]) -> list[int]:
        """The lines in the preference format, when every wrongly formatted line is one."""
        return lines if len(self.wrong_preference) == len(lines) else []

    def check_prompts(self) -> None:
        if len(self.prompts) < 2 or len(self.prompts) >= MAX_SYSTEM_PROMPTS:
            return
        common, lines = max(self.prompts.items(), key=lambda kv: len(kv[1]))
        if len(lines) * 2 < self.n_with_prompt:
            return  # no prompt dominates: the variety looks deliberate
        others = sorted(line for prompt, ls in self.prompts.items() if prompt != common for line in ls)
        preview = common if len(common) <= 60 else common[:57] + "..."
        self.add("inconsistent_system_prompt", others[0], f"{len(lines)} examples use the system prompt "
                 f"\"{preview}\"; {len(others)} use {len(self.prompts) - 1} other prompt(s): lines {_lines_text(others)}.",
                 "Use one system prompt, the one you will send at inference.", others)

    def check_answers(self) -> None:
        counts = Counter({k: len(v) for k, v in self.answer_format.items()})
        total = sum(counts.values())
        if total < OUTLIER_MIN_EXAMPLES or not counts["json"] or not counts["text"]:
            return
        minority = "json" if counts["json"] < counts["text"] else "text"
        if counts[minority] > OUTLIER_SHARE * total:
            return
        lines = self.answer_format[minority]
        if minority == "text":
            message = (f"{counts['json']} of {total} examples answer in JSON but {len(lines)} "
                       f"{'does' if len(lines) == 1 else 'do'} not "
                       f"(invalid or plain-text answers): lines {_lines_text(lines)}.")
            hint = "Make every answer valid JSON in the same shape; the model learns the format from all of them."
        else:
            message = (f"{counts['text']} of {total} examples answer in plain text but {len(lines)} answer in "
                       f"JSON: lines {_lines_text(lines)}.")
            hint = "Keep one answer format across examples."
        self.add("answer_format_outlier", lines[0], message, hint, lines)


_STOP = object()
_UNREAD = object()


def _is_json(text: str) -> bool:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return False
    return is_json(stripped)


def _chunks(path: str, n: int) -> list[tuple[int, int, int]]:
    """``n`` byte ranges of the file that start and end at line ends, with the number of each first line."""
    size = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as fh:
        for k in range(1, n):
            fh.seek(size * k // n)
            fh.readline()
            if bounds[-1] < fh.tell() < size:
                bounds.append(fh.tell())
        bounds.append(size)
        chunks, line = [], 1
        fh.seek(0)
        for start, end in zip(bounds, bounds[1:], strict=False):
            chunks.append((start, end, line))
            left = end - start
            while left > 0:
                block = fh.read(min(left, 1 << 22))
                line += block.count(b"\n")
                left -= len(block)
    return chunks


def _read_chunk(path: str, info: ModelInfo, data_format: str, start: int, end: int,
                first_line: int, item_fields: tuple[str, ...] = ()) -> _Validator:
    validator = _Validator(path, info, data_format, item_fields)
    validator.read(start, end, first_line)
    validator.enc = validator.raw_count = None  # the encoding and the count cache stay in the worker process
    validator.cache = {}
    return validator


def _start_method() -> str:
    """``fork`` where it is safe (Linux, a process with no other thread): the workers start in
    milliseconds and inherit the loaded encoding. Otherwise ``spawn``: a fresh interpreter that imports
    and loads everything again, since forking a process whose threads may hold locks can deadlock."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "spawn"


def default_workers(path: str | os.PathLike, info: ModelInfo) -> int:
    """Worker processes worth starting for this file: one per 8 MiB (``fork``) or 64 MiB (``spawn``),
    at most one per idle core; one for local models (whose Hugging Face tokenizer each process would load).

    Idle cores, not all cores: on a machine already busy, more processes only share the same CPU time
    (bench/validate.py measured 2 workers 1.5x slower than 1 process on 2 cores at load average 6)."""
    if info.encoding.startswith("hf:"):
        return 1
    try:
        size = os.path.getsize(path)
    except OSError:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cores = min(cores, int(cores - os.getloadavg()[0] + 1))  # + 1: this process is part of the load
    except OSError:  # no load average on this system
        pass
    per_worker = PARALLEL_MIN_BYTES_FORK if _start_method() == "fork" else PARALLEL_MIN_BYTES
    return max(1, min(cores, MAX_WORKERS, size // per_worker))


def model_info(model: str | None, prices: str | os.PathLike | None = None) -> ModelInfo:
    """The catalog's entry for ``model``; a local Hugging Face model directory (a fine-tuned output, say)
    counts as a local model with its own tokenizer and context length."""
    catalog = load_catalog(prices)
    name = model or DEFAULT_MODEL
    info = catalog.find(name)
    if info is None and os.path.isdir(os.path.expanduser(name)):
        from tunewise.models import resolve

        spec = resolve(name)
        return ModelInfo(name=spec.name, provider="local", encoding=f"hf:{spec.name}",
                         context_limit=spec.context_length, training=0.0, input=0.0, output=0.0, ft_input=0.0,
                         ft_output=0.0, ft_cached_input=0.0)
    return info if info is not None else catalog.get(name)


def sniff_format(path: str | os.PathLike) -> str | None:
    """The format of the file's first example (``chat`` or ``prompt_completion``); None when no early line
    tells (the file is empty, not JSON, or its first objects have neither key)."""
    try:
        for _line, example in iter_examples(path):
            fmt = example_format(example)
            if fmt is not None:
                return fmt
    except (DataError, UsageError):
        return None
    return None


def validate(path: str | os.PathLike, model: str | None = None, prices: str | os.PathLike | None = None, *,
             workers: int | None = None, data_format: str | None = None, grader: dict | None = None) -> Report:
    """Validate a fine-tuning JSONL file for ``model`` (default gpt-4o-mini): every finding, and the
    token statistics (exact counts in the model's encoding, billed tokens capped at its context limit).

    ``data_format``: the format the file must be in; by default the one the model takes (the catalog's
    ``training_format``: ``chat``, or ``prompt_completion`` for babbage-002 and davinci-002); ``preference``
    for DPO (``{"input", "preferred_output", "non_preferred_output"}``: the tokens of the input and of both
    outputs are counted, which is what OpenAI bills for a DPO file). ``"auto"`` accepts any, by the file's first
    example (the local trainer, which trains all three). ``reinforcement`` for reinforcement fine-tuning (chat
    messages ending with the turn to answer, no answer, extra fields for the grader; only the prompts' tokens are
    counted); ``grader`` (an OpenAI grader object) adds the rule that every line has the fields its templates read.

    ``workers``: processes that read parts of the file in parallel (default: see ``default_workers``;
    1 for small files and local models). The report is the same whatever the number.
    """
    info = model_info(model, prices)
    path = str(path)
    open_checked(path).close()  # a missing file is one clear error, whatever the workers
    if data_format == "auto":
        data_format = sniff_format(path) or info.training_format
    elif data_format is not None and data_format not in DATA_FORMATS:
        raise UsageError(f"Unknown data format {data_format!r}.",
                         hint="Use " + ", ".join(DATA_FORMATS) + " or auto.", param="data_format")
    n = default_workers(path, info) if workers is None else max(1, workers)
    chunks = _chunks(path, n) if n > 1 else [(0, None, 1)]
    fields: tuple[str, ...] = ()
    if grader is not None:
        from tunewise.eval.graders.spec import item_fields

        fields = tuple(item_fields(grader))
    # loads the encoding here, before any fork, so workers inherit it
    result = _Validator(path, info, data_format, fields)
    if len(chunks) == 1:
        return result.read().finish()
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(max_workers=len(chunks), mp_context=context) as pool:
        parts = [pool.submit(_read_chunk, path, info, result.format, *chunk, fields) for chunk in chunks]
        for part in parts:
            chunk = part.result()
            if result.fatal:
                continue  # not JSONL: the other chunks' findings would be noise
            result.merge(chunk)
            result.fatal = chunk.fatal
    return result.finish()
