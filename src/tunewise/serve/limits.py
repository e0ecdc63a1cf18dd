"""Request limits the API enforces as OpenAI does: metadata, name lengths, schemas (400s naming the parameter)."""

from __future__ import annotations

from typing import Any

from tunewise.errors import UsageError
from tunewise.infer.grammar import check_schema_bounds

MAX_METADATA_PAIRS = 16
"""OpenAI: "Set of 16 key-value pairs"."""
MAX_METADATA_KEY = 64
"""OpenAI: "Keys are strings with a maximum length of 64 characters"."""
MAX_METADATA_VALUE = 512
"""OpenAI: "Values are strings with a maximum length of 512 characters"."""
MAX_MODEL_NAME = 256
"""Characters of a ``model`` parameter (a fine-tuned name is ``ft:BASE:PROJECT:SUFFIX:ID``, well under it)."""
MAX_SUFFIX = 64
"""Characters of a job's ``suffix`` (OpenAI: "up to 64 characters")."""

__all__ = ["MAX_METADATA_KEY", "MAX_METADATA_PAIRS", "MAX_METADATA_VALUE", "MAX_MODEL_NAME", "MAX_SUFFIX",
           "check_metadata", "check_model_name", "check_schema_bounds", "metadata_filter_key"]


def _clean_key(key: str, param: str) -> None:
    if not key or len(key) > MAX_METADATA_KEY:
        raise UsageError(f"Invalid metadata key of {len(key)} characters: keys are 1 to {MAX_METADATA_KEY} "
                         "characters.", param=param)
    if any(ord(c) < 32 for c in key):
        raise UsageError("Invalid metadata key: it holds a control character (NUL, a line break, ...).", param=param)


def check_metadata(metadata: dict[str, Any] | None, param: str = "metadata") -> None:
    """OpenAI's metadata rules: at most 16 pairs, string keys up to 64 characters, string values up to 512."""
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise UsageError(f"metadata has {len(metadata)} keys; at most {MAX_METADATA_PAIRS} are allowed.",
                         param=param)
    for key, value in metadata.items():
        _clean_key(key, f"{param}.{key[:MAX_METADATA_KEY]}" if key else param)
        if not isinstance(value, str):
            raise UsageError(f"metadata.{key} must be a string.", param=f"{param}.{key}")
        if len(value) > MAX_METADATA_VALUE:
            raise UsageError(f"metadata.{key} is {len(value)} characters long; values are at most "
                             f"{MAX_METADATA_VALUE}.", param=f"{param}.{key}")


def metadata_filter_key(key: str) -> str:
    """A ``metadata[KEY]=value`` list filter's key, checked like a stored one (400 naming ``metadata``)."""
    _clean_key(key, "metadata")
    return key


def check_model_name(model: str, param: str = "model") -> None:
    if not model or len(model) > MAX_MODEL_NAME:
        raise UsageError(f"Invalid model name of {len(model)} characters: names are 1 to {MAX_MODEL_NAME} "
                         "characters.", param=param, hint="GET /v1/models lists the models.")
    if any(ord(c) < 32 for c in model):
        raise UsageError("Invalid model name: it holds a control character.", param=param)
