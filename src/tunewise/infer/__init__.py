"""Batched chat generation: the engine behind ``/v1/chat/completions``.

```python
from tunewise.infer import Engine, GenerationRequest
engine = Engine(max_batch_size=8)
res = engine.generate(GenerationRequest(model="smollm2-135m-instruct",
                                        messages=[{"role": "user", "content": "Hi"}], max_tokens=32))
res.choices[0].text, res.choices[0].finish_reason, res.prompt_tokens, res.completion_tokens
for delta in (stream := engine.stream(request)): ...   # StreamDelta(index, text, finish_reason); stream.usage
```

Tool calls: ``GenerationRequest(tools=..., tool_choice=..., parallel_tool_calls=...)``; the answer's text holds the
calls, read with ``tunewise.infer.tools.parse_tool_calls(text) -> (content, tool_calls)``.

Modules: ``types`` (request, result, deltas, counters), ``grammar`` (``response_format`` via xgrammar), ``tools``
(the tool-capable chat template, the checks of tool definitions, their grammar and the parser of calls),
``runner`` (one model and its continuous-batching scheduler thread), ``engine`` (loading, LRU, dispatch).
"""

from tunewise.infer.engine import Engine, Stream
from tunewise.infer.types import Choice, EngineStats, GenerationRequest, GenerationResult, StreamDelta

__all__ = ["Choice", "Engine", "EngineStats", "GenerationRequest", "GenerationResult", "Stream", "StreamDelta"]
