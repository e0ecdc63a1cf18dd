"""Reading JSONL safely: one line at a time, with every problem named by its line.

The file is streamed (never loaded whole). A UTF-8 byte-order mark and CRLF line ends are accepted. A line
that fails to parse is explained in plain words, and one particular failure is recognised by name: a string
value holding JSON whose quotes were not escaped (the fine-tuning guide's own example does this), which
``repair`` fixes by escaping the nested JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import DataError, LocalFileNotFound, UsageError

BOM = b"\xef\xbb\xbf"
_DECODER = json.JSONDecoder()

# A string value that opens with { or [ right after a key: where unescaped nested JSON starts.
_NESTED_START = re.compile(r'"\s*:\s*"(?=[\[{])')

TO_JSONL_ARRAY = ("convert it with `jq -c '.[]' FILE > FILE.jsonl` or `python -c \"import json,sys; "
                  "[print(json.dumps(x, ensure_ascii=False)) for x in json.load(open(sys.argv[1]))]\" FILE "
                  "> FILE.jsonl`")
TO_JSONL_OBJECT = "put each example on one line, e.g. `jq -c . FILE > FILE.jsonl`"


try:  # jiter (Rust; installed with the openai SDK) parses a line about twice as fast as json.loads
    from jiter import from_json as _fast_loads
except ImportError:  # pragma: no cover - the stdlib alone gives the same results, slower
    _fast_loads = None

try:  # msgspec (C) parses a line faster still, and checks that a text is JSON without building it
    import msgspec as _msgspec

    unchecked_loads = _msgspec.json.Decoder().decode
    """msgspec's parse. It reads JSON nested deeper than ``MAX_JSON_DEPTH`` (up to Python's recursion limit),
    so its value stands only for a text that is ``shallow``, or a value seen to be shallow; any other
    text, and any it refuses (``ValueError``, ``RecursionError``), is ``fallback_loads``' to decide."""
    _ms_check = _msgspec.json.Decoder(_msgspec.Raw).decode
except ImportError:  # pragma: no cover - jiter and the stdlib give the same results, slower
    unchecked_loads = _ms_check = None

BLOCK = 1 << 20  # bytes read at a time by ``raw_lines``


@dataclass
class Line:
    """One physical line of the file."""

    number: int
    """1-based line number."""
    raw: bytes
    """The bytes as read, line end removed (a BOM on line 1 too)."""
    text: str | None
    """The decoded text, or None when the bytes are not UTF-8."""
    utf8_error: str = ""
    """Where decoding failed, when it did."""


def open_checked(path: str | os.PathLike):
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a JSONL file.", param="file")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise LocalFileNotFound(f"File {path} does not exist.", hint="Check the path.", param="file") from None
    except PermissionError:
        raise UsageError(f"File {path} cannot be read (permission denied).", param="file") from None


def text_lines(path: str | os.PathLike, what: str, hint: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a small UTF-8 text file the user named (a test set, a list
    of inputs); ``what`` names the file in the errors ("Test file"), ``hint`` says what it should hold."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LocalFileNotFound(f"{what} {path} does not exist.", hint=hint) from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory.", hint=hint) from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {path} is not UTF-8 text.", hint=hint) from None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, line


def raw_lines(fh, first_line: int = 1, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
    """``(number, bytes)`` per line of a binary file handle, with the line end (and a BOM on line 1)
    removed; numbered from ``first_line``, stopping once ``limit`` bytes are read (a chunk of the file
    ends at a line end; a line that crosses the limit is still read whole).

    The file is read a block at a time and split at line ends (much faster than a readline per line);
    a line longer than a block is gathered from its pieces."""
    number = first_line
    left = limit
    pending: list[bytes] = []  # the pieces of a line whose end has not been read yet
    read = fh.read
    while left is None or left > 0:
        block = read(BLOCK if left is None else min(BLOCK, left))
        if not block:
            break
        if left is not None:
            left -= len(block)
            if left <= 0 and not block.endswith(b"\n"):
                block += fh.readline()  # finish the line that crosses the limit, as a line-by-line read does
        end = block.find(b"\n")
        if end < 0:
            pending.append(block)
            continue
        if pending:
            pending.append(block[:end])
            lines = [b"".join(pending)]
            pending = []
            lines += block[end + 1:].split(b"\n")
        else:
            lines = block.split(b"\n")
        last = lines.pop()  # after the block's last line end: the start of the next line, or nothing
        if last:
            pending.append(last)
        if number == 1 and lines[0].startswith(BOM):
            lines[0] = lines[0][3:]
        for raw in lines:
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            yield number, raw
            number += 1
    if pending:
        raw = b"".join(pending)
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 1 and raw.startswith(BOM):
            raw = raw[3:]
        yield number, raw


def decode_line(number: int, raw: bytes) -> Line:
    try:
        return Line(number, raw, raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Line(number, raw, None, f"byte {exc.start + 1} (0x{raw[exc.start]:02x}) {exc.reason}")


def read_lines(fh, first_line: int = 1, limit: int | None = None) -> Iterator[Line]:
    """Lines of a binary file handle, decoded (see ``raw_lines``)."""
    for number, raw in raw_lines(fh, first_line, limit):
        yield decode_line(number, raw)


MAX_JSON_DEPTH = 200
"""Deepest nesting of arrays and objects a line may have (jiter's own limit). Deeper JSON is refused as a
finding on its line: no chat example nests that deep, and Python's parser would hit its recursion limit."""
MAX_INT_DIGITS = 4300
"""Longest integer a line may hold: Python's limit for converting digits to an int (``sys.int_info``)."""


class JSONLimitError(ValueError):
    """Valid-looking JSON beyond what is parsed here: nested deeper than ``MAX_JSON_DEPTH`` or with an
    integer longer than ``MAX_INT_DIGITS`` digits. ``code`` is the finding's code, ``reason`` plain words."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


TOO_DEEP = JSONLimitError("json_too_deep", f"the JSON nests arrays or objects more than {MAX_JSON_DEPTH} levels deep")
NUMBER_TOO_LONG = JSONLimitError("number_too_long", f"an integer has more than {MAX_INT_DIGITS} digits")


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def strict_loads(text: bytes | str):
    """``json.loads``, but every failure is a ``ValueError``: ``json.JSONDecodeError`` for invalid JSON (with
    its position), ``JSONLimitError`` for JSON nested too deep or with too long an integer (never a
    ``RecursionError`` or an int-conversion error from deep inside the parser)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise JSONLimitError(TOO_DEEP.code, TOO_DEEP.reason) from None
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise JSONLimitError(NUMBER_TOO_LONG.code, NUMBER_TOO_LONG.reason) from None
    if too_deep(value):
        raise JSONLimitError(TOO_DEEP.code, TOO_DEEP.reason)
    return value


def fast_loads(raw: bytes | str):
    """``json.loads`` with the same results, faster; raises ``ValueError`` (without a useful position:
    parse again with ``strict_loads`` for the error to show), ``JSONLimitError`` among them for JSON nested
    deeper than ``MAX_JSON_DEPTH`` or with an integer over ``MAX_INT_DIGITS`` digits."""
    if unchecked_loads is not None and shallow(raw):
        try:  # what msgspec accepts, it reads as jiter and the stdlib do; the rest is theirs to decide
            return unchecked_loads(raw)
        except (ValueError, RecursionError):
            pass
    return fallback_loads(raw)


def fallback_loads(raw: bytes | str):
    """``fast_loads`` without msgspec: jiter, then the stdlib."""
    if _fast_loads is not None:
        try:
            return _fast_loads(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"))
        except ValueError:
            pass  # the stdlib decides: it also accepts lone surrogate escapes, which jiter refuses
    return strict_loads(raw)


def shallow(raw: bytes | str) -> bool:
    """Whether the text has at most ``MAX_JSON_DEPTH`` brackets, so it cannot nest deeper than the limit
    (msgspec itself reads as deep as Python's recursion limit)."""
    if isinstance(raw, bytes):
        return raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH
    return raw.count("[") + raw.count("{") <= MAX_JSON_DEPTH


def is_json(text: str) -> bool:
    """Whether ``fast_loads(text)`` succeeds; a short text is only checked, not built into Python objects."""
    if _ms_check is not None and len(text) <= MAX_INT_DIGITS and shallow(text):
        try:  # too short for an integer over the limit, too few brackets to nest too deep
            _ms_check(text)
            return True
        except (ValueError, RecursionError):
            pass  # maybe JSON all the same (NaN, a lone surrogate escape): the full parse decides
    try:
        fast_loads(text)
    except ValueError:
        return False
    return True


def utf16_bom(first: bytes) -> str | None:
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    return None


# json's messages, in plain words: (prefix of json's message, our words).
_PLAIN = (
    ("Expecting property name enclosed in double quotes",
     "expected a key in double quotes here (a trailing comma before '}', or a key in single quotes?)"),
    ("Expecting ',' delimiter", "expected a comma between two items (a missing comma, or an unescaped quote "
                                "inside a string?)"),
    ("Expecting ':' delimiter", "expected a colon after the key"),
    ("Expecting value", "expected a value here (a trailing comma, a missing value, single quotes, or a "
                        "Python literal such as None/True/NaN?)"),
    ("Unterminated string", "a string starts here and is never closed (a missing closing quote?)"),
    ("Invalid control character", "a raw control character (a tab or a line break) inside a string; write it "
                                  "as \\t or \\n"),
    ("Invalid \\escape", "an invalid backslash escape inside a string; write a literal backslash as \\\\"),
    ("Invalid \\uXXXX escape", "an invalid \\u escape inside a string"),
    ("Extra data", "there is more text after the complete JSON object (two examples on one line?)"),
)


def plain_reason(exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(exc.doc.rstrip()):
        return "the line ends before the JSON does (an example cut short, or spread over several lines?)"
    for prefix, words in _PLAIN:
        if exc.msg.startswith(prefix):
            return words
    return exc.msg[0].lower() + exc.msg[1:]


def escape_nested_json(text: str) -> str | None:
    """The line with nested JSON string values escaped, or None when that does not make it parse.

    A value like ``"content": "{"items": []}"`` is invalid JSON. At each string value that opens with
    ``{`` or ``[``, the nested JSON is decoded as JSON; if it ends right before a closing quote, its text
    is escaped in place. The fix counts only when the whole line then parses.
    """
    out: list[str] = []
    pos = 0
    changed = False
    for match in _NESTED_START.finditer(text):
        start = match.end()
        if start < pos:
            continue
        try:
            _value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):  # invalid, too deep, or a too long integer: not a fix
            continue
        if end >= len(text) or text[end] != '"':
            continue
        segment = text[start:end]
        escaped = json.dumps(segment, ensure_ascii=False)[1:-1]
        if escaped != segment:
            out.append(text[pos:start])
            out.append(escaped)
            pos = end
            changed = True
    if not changed:
        return None
    out.append(text[pos:])
    fixed = "".join(out)
    try:
        strict_loads(fixed)
    except ValueError:
        return None
    return fixed


def iter_examples(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line_number, example)`` for every example of a JSONL file, streamed; blank lines are skipped.

    Raises ``DataError`` at the first line that is not a JSON object, naming the line and the reason
    (``tunewise validate`` lists them all).
    """
    with open_checked(path) as fh:
        for number, raw in raw_lines(fh):
            if not raw or raw.isspace():
                continue
            try:
                example = fast_loads(raw)
            except ValueError:
                pass
            else:
                if isinstance(example, dict):
                    yield number, example
                    continue
            line = decode_line(number, raw)
            if line.text is None:
                raise DataError(f"{path}:{line.number}: not valid UTF-8 ({line.utf8_error}).",
                                hint="Save the file as UTF-8.", code="invalid_utf8")
            if not line.text.strip():
                continue
            try:
                example = strict_loads(line.text)
            except JSONLimitError as exc:
                raise DataError(f"{path}:{line.number}: {exc.reason}.", code=exc.code,
                                hint=f"Run `tunewise validate {path}` to see every problem.") from None
            except json.JSONDecodeError as exc:
                code = "unescaped_nested_json" if escape_nested_json(line.text) else "invalid_json"
                raise DataError(f"{path}:{line.number}: invalid JSON at column {exc.colno}: {plain_reason(exc)}.",
                                hint=f"Run `tunewise validate {path}` to see every problem"
                                     + (" and `--fix OUT` to repair it." if code != "invalid_json" else "."),
                                code=code) from None
            if not isinstance(example, dict):
                raise DataError(f"{path}:{line.number}: expected a JSON object, found {type_name(example)}.",
                                hint="Each line must be one example: {\"messages\": [...]}.", code="not_object")
            yield line.number, example


def repair(path: str | os.PathLike, out: str | os.PathLike) -> list[int]:
    """Write a copy of ``path`` to ``out`` with unescaped nested JSON escaped; return the changed lines.

    Every other byte is copied as it is. The input is never modified (``out`` must be another file).
    """
    src, dst = Path(path), Path(out)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise UsageError(f"--fix would overwrite the input {src}.", hint="Name another output file.",
                         param="fix")
    changed: list[int] = []
    with open_checked(src) as fh:
        tmp = dst.with_name(dst.name + ".tmp")
        try:
            with open(tmp, "wb") as w:
                for number, raw in enumerate(fh, 1):
                    body = raw.rstrip(b"\r\n")
                    ending = raw[len(body):]
                    bom = b""
                    if number == 1 and body.startswith(BOM):
                        bom, body = BOM, body[3:]
                    fixed = None
                    try:
                        text = body.decode("utf-8")
                        strict_loads(text)
                    except UnicodeDecodeError:
                        text = None
                    except JSONLimitError:
                        pass  # too deep or too long a number: nothing to repair, copied as it is
                    except json.JSONDecodeError:
                        fixed = escape_nested_json(text)
                    if fixed is not None:
                        w.write(bom + fixed.encode("utf-8") + ending)
                        changed.append(number)
                    else:
                        w.write(raw)
            os.replace(tmp, dst)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UsageError(f"Cannot write {dst}: {exc.strerror}.", param="fix") from None
    return changed


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
