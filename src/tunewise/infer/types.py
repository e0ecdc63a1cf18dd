"""What a caller asks the engine for and what it gets back, with the checks that turn bad input into clear errors.

The fields follow OpenAI's chat completions request (``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``,
``n``, ``response_format``) so the server passes them through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.errors import UsageError

MAX_STOP_SEQUENCES = 4
"""OpenAI accepts at most 4 stop sequences; so do we, with the same error."""

MAX_TEMPERATURE = 2.0
"""OpenAI's upper bound for ``temperature``."""


@dataclass
class GenerationRequest:
    """One chat completion request."""

    model: str
    """A registry name (``tunewise.models``), a local HF model directory, or a fine-tuned output directory
    (``tunewise_model.json`` beside a PEFT adapter or a full model)."""
    messages: list[dict[str, Any]]
    """OpenAI chat messages (``role``, ``content`` as a string or a list of text parts)."""
    max_tokens: int | None = None
    """Most tokens to generate per choice; ``None`` means up to the model's context length (or ``default_max_tokens``).
    A request whose messages plus ``max_tokens`` do not fit the context is refused."""
    default_max_tokens: int | None = None
    """With ``max_tokens`` left out: the most tokens to generate, or fewer where the context ends sooner (never a
    reason to refuse the request). The server sets it to its ``max_chat_tokens``."""
    temperature: float = 1.0
    """0 is greedy (argmax); otherwise logits are divided by it before sampling. 0 to 2."""
    top_p: float = 1.0
    """Nucleus sampling: sample only from the smallest set of tokens whose probability reaches ``top_p`` (0 to 1; the
    most likely token always stays, so 0 samples only it)."""
    stop: str | list[str] | None = None
    """Up to 4 strings; generation stops before the first one, which is not part of the text."""
    seed: int | None = None
    """Makes sampling reproducible for this request (its own random generator, whatever else is batched)."""
    n: int = 1
    """How many choices; they are decoded as ``n`` rows of the same batch."""
    response_format: dict[str, Any] | None = None
    """``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"name",
    "schema", "strict"}}``: decoding is constrained so the answer is valid JSON (matching the schema)."""
    tools: list[dict[str, Any]] | None = None
    """OpenAI function tools (``{"type": "function", "function": {"name", "description", "parameters",
    "strict"}}``): written into the prompt by the chat template; the answer's calls are read back with
    ``tunewise.infer.tools.parse_tool_calls``."""
    tool_choice: str | dict[str, Any] | None = None
    """``"none"``, ``"auto"`` (the default with tools), ``"required"`` or ``{"type": "function", "function":
    {"name": ...}}``; see ``tunewise.infer.tools.structural_tag`` for what each constrains."""
    parallel_tool_calls: bool | None = None
    """False: at most one call per answer (constrained when decoding is)."""
    prompt: str | None = None
    """A legacy completion (``/v1/completions``): this text, encoded as the tokenizer encodes it (its own special
    tokens, a BOS where it adds one: the trainer's prompt/completion render), is the prompt instead of
    ``messages`` rendered by the chat template."""

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def check(self, max_batch_size: int) -> None:
        """Raise a ``UsageError`` naming the parameter at fault."""
        if self.prompt is not None:
            if not isinstance(self.prompt, str):
                raise UsageError("prompt must be a string.", param="prompt")
        elif not isinstance(self.messages, list) or not self.messages:
            raise UsageError("'messages' must be a non-empty list of chat messages.",
                             hint='Pass at least one message, e.g. [{"role": "user", "content": "Hi"}].',
                             param="messages")
        for i, m in enumerate(self.messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise UsageError(f"messages[{i}] must be an object with a 'role' and a 'content'.",
                                 param=f"messages.[{i}]")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise UsageError(f"max_tokens must be a positive integer, not {self.max_tokens!r}.",
                             hint="Leave it out to generate up to the model's context length.", param="max_tokens")
        if not isinstance(self.temperature, int | float) or not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise UsageError(f"temperature must be between 0 and {MAX_TEMPERATURE}, not {self.temperature!r}.",
                             hint="Use 0 for greedy decoding.", param="temperature")
        if self.default_max_tokens is not None and (not isinstance(self.default_max_tokens, int)
                                                    or self.default_max_tokens < 1):
            raise UsageError(f"default_max_tokens must be a positive integer, not {self.default_max_tokens!r}.",
                             param="default_max_tokens")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, int | float) or not 0 <= self.top_p <= 1:
            raise UsageError(f"top_p must be between 0 and 1, not {self.top_p!r}.", param="top_p")
        if not isinstance(self.n, int) or self.n < 1:
            raise UsageError(f"n must be a positive integer, not {self.n!r}.", param="n")
        if self.n > max_batch_size:
            raise UsageError(f"n={self.n} is more than this server's batch size ({max_batch_size}).",
                             hint=f"Ask for at most {max_batch_size} choices per request, or start the engine "
                             "with a larger max_batch_size.", param="n")
        stops = self.stop_list()
        if len(stops) > MAX_STOP_SEQUENCES or any(not isinstance(s, str) or not s for s in stops):
            raise UsageError(f"stop must be a non-empty string or a list of at most {MAX_STOP_SEQUENCES} "
                             "non-empty strings.", param="stop")
        if self.seed is not None and not isinstance(self.seed, int):
            raise UsageError(f"seed must be an integer, not {self.seed!r}.", param="seed")
        from tunewise.infer.tools import check_tools

        check_tools(self.tools, self.tool_choice, self.parallel_tool_calls)

    def tool_grammar(self) -> dict[str, Any] | None:
        """The structural tag that constrains the tool calls (``tunewise.infer.tools.structural_tag``), or None."""
        from tunewise.infer.tools import structural_tag

        spec = structural_tag(self.tools, self.tool_choice, self.parallel_tool_calls)
        if spec is not None and self.response_format not in (None, {"type": "text"}):
            raise UsageError("response_format and constrained tool calls (tool_choice required, a named function, "
                             "strict functions, or tool_choice none) cannot be combined.", param="response_format",
                             hint="Leave response_format out, or tool_choice \"auto\" with non-strict functions.")
        return spec


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str
    """``"stop"`` (end of turn, a stop string, or a complete constrained answer) or ``"length"`` (max_tokens)."""


@dataclass
class GenerationResult:
    choices: list[Choice]
    prompt_tokens: int
    """Tokens of the rendered prompt, counted by the model's own tokenizer (once, whatever ``n``)."""
    completion_tokens: int
    """Tokens generated over all choices, the end-of-turn token included."""
    model: str = ""
    """The model that answered, as the request named it."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class StreamDelta:
    """A piece of one choice's text; the last delta of a choice carries its ``finish_reason``."""

    index: int
    text: str
    finish_reason: str | None = None


@dataclass
class EngineStats:
    """Counters that show batching at work (read with ``Engine.stats()``)."""

    requests: int = 0
    """Requests accepted."""
    forward_passes: int = 0
    """Model forward passes, prefill and decode."""
    prefill_passes: int = 0
    """Forward passes over new prompts (several prompts can share one)."""
    decode_steps: int = 0
    """Forward passes that produce one token for every running sequence."""
    generated_tokens: int = 0
    """Tokens sampled over all sequences."""
    cached_prompt_tokens: int = 0
    """Prompt tokens whose keys and values came from the prefix cache instead of a forward pass (llama.cpp)."""
    draft_tokens: int = 0
    """Prompt-lookup draft tokens fed after greedy rows' last tokens (llama.cpp)."""
    accepted_draft_tokens: int = 0
    """Draft tokens the model agreed with: each is a token generated without a step of its own."""
    max_batch_size_seen: int = 0
    """The most sequences one forward pass served."""
    batch_sizes: dict[int, int] = field(default_factory=dict)
    """Decode steps per batch size."""
