"""OpenAI's grader templates: ``{{ item.field }}``, ``{{ sample.output_text }}``, ``{{ sample.output_json.x }}``.

A reference is a namespace (``item`` or ``sample``) followed by ``.key`` or ``[index]`` steps. Strings are
inserted as they are; numbers, booleans, ``null``, objects and lists as JSON. A missing key is an
``invalid_variable_error``; ``sample.output_json`` when the sample is not JSON a ``sample_parse_error``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

REFERENCE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]")
_HEAD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices", "output_audio")
_CORE_FIELDS = ("output_text", "output_json")
NAMESPACES = ("item", "sample")


class TemplateError(ValueError):
    """A reference that cannot be filled; ``kind`` is ``invalid_variable`` or ``sample_parse``."""

    def __init__(self, message: str, kind: str = "invalid_variable") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Sample:
    """The ``sample`` namespace: the model's answer, and its JSON when the answer is JSON; ``output_tools``,
    ``choices`` and ``output_audio`` where the caller has them (a dict sample)."""

    output_text: str
    output_json: Any = None
    json_ok: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str | None) -> Sample:
        text = "" if text is None else str(text)
        try:
            value, ok = json.loads(text), True
        except ValueError:
            value, ok = None, False
        return cls(output_text=text, output_json=value, json_ok=ok)

    @classmethod
    def coerce(cls, sample: Any) -> Sample:
        """A ``Sample`` from a string (the model's answer) or a dict with ``output_text``/``output_json``."""
        if isinstance(sample, Sample):
            return sample
        if sample is None or isinstance(sample, str):
            return cls.from_text(sample)
        if isinstance(sample, dict):
            text = sample.get("output_text")
            if text is None and "output_json" in sample:
                text = json.dumps(sample["output_json"], ensure_ascii=False)
            made = cls.from_text(text)
            if "output_json" in sample:
                made.output_json, made.json_ok = sample["output_json"], True
            made.extra = {k: v for k, v in sample.items() if k not in _CORE_FIELDS}
            return made
        raise TypeError(f"a sample is a string or a dict with output_text, not {type(sample).__name__}")

    def namespace(self) -> dict[str, Any]:
        return {**self.extra, "output_text": self.output_text, "output_json": self.output_json}


def parse_reference(ref: str) -> tuple[str, list[str | int]]:
    """``"item.a[0].b"`` -> ``("item", ["a", 0, "b"])``; raises ``TemplateError`` on bad syntax."""
    head = _HEAD.match(ref)
    if head is None:
        raise TemplateError(f"'{{{{ {ref} }}}}' is not a reference (write {{{{ item.FIELD }}}} or "
                            "{{ sample.output_text }})")
    steps: list[str | int] = []
    pos = head.end()
    while pos < len(ref):
        m = _STEP.match(ref, pos)
        if m is None:
            raise TemplateError(f"'{{{{ {ref} }}}}' has an unreadable part at character {pos + 1} "
                                "(use .key or [index])")
        key, index, dq, sq = m.groups()
        steps.append(int(index) if index is not None else key if key is not None else dq if dq is not None
                     else sq)
        pos = m.end()
    return head.group(0), steps


def references(template: str) -> list[str]:
    """The references a template uses, in order (``["item.label", "sample.output_text"]``)."""
    return [m.group(1) for m in REFERENCE.finditer(template)]


def check(template: str, where: str, namespaces: tuple[str, ...] = NAMESPACES) -> None:
    """Refuse references to unknown namespaces or sample fields (the item's keys are only known per row)."""
    for ref in references(template):
        try:
            ns, steps = parse_reference(ref)
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
        if ns not in namespaces:
            raise TemplateError(f"{where}: '{{{{ {ref} }}}}' refers to '{ns}'; templates can use "
                                + " and ".join(f"{{{{ {n}.* }}}}" for n in namespaces))
        if ns != "item" and (not steps or steps[0] not in SAMPLE_FIELDS):
            raise TemplateError(f"{where}: '{{{{ {ref} }}}}': {'the sample' if ns == 'sample' else ns} has "
                                + ", ".join(f"{ns}.{f}" for f in SAMPLE_FIELDS))
        if ns == "item" and not steps:
            raise TemplateError(f"{where}: '{{{{ {ref} }}}}' needs a field: {{{{ item.FIELD }}}}")


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def lookup(ref: str, context: dict[str, Any], samples: dict[str, Sample]) -> Any:
    ns, steps = parse_reference(ref)
    if ns in samples:
        sample = samples[ns]
        if steps and steps[0] == "output_json" and not sample.json_ok:
            raise TemplateError(f"'{{{{ {ref} }}}}': the sample is not valid JSON", kind="sample_parse")
        value: Any = sample.namespace()
    elif ns in context:
        value = context[ns]
    else:
        raise TemplateError(f"'{{{{ {ref} }}}}': there is no '{ns}'")
    if ns in samples and steps and steps[0] in SAMPLE_FIELDS and steps[0] not in value:
        raise TemplateError(f"'{{{{ {ref} }}}}': this sample has no {steps[0]} (only a chat answer's text)")
    walked = ns
    for step in steps:
        if isinstance(step, int) and isinstance(value, list):
            if step >= len(value):
                raise TemplateError(f"'{{{{ {ref} }}}}': {walked} has {len(value)} entries, no [{step}]")
            value = value[step]
        elif isinstance(value, dict) and str(step) in value:
            value = value[str(step)]
        else:
            shown = f"[{step}]" if isinstance(step, int) else f".{step}"
            keys = f" (it has: {', '.join(map(str, list(value)[:10]))})" if isinstance(value, dict) else ""
            raise TemplateError(f"'{{{{ {ref} }}}}': {walked} has no {shown}{keys}")
        walked += f"[{step}]" if isinstance(step, int) else f".{step}"
    return value


def render(template: str, item: dict[str, Any] | None, sample: Any = None,
           extra_samples: dict[str, Sample] | None = None) -> str:
    """``template`` with every ``{{ ... }}`` filled from ``item`` and ``sample``; raises ``TemplateError``."""
    samples = {"sample": Sample.coerce(sample)}
    samples.update(extra_samples or {})
    context = {"item": item or {}}
    return REFERENCE.sub(lambda m: _to_text(lookup(m.group(1), context, samples)), template)
