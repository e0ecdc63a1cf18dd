"""Write the function-calling example data set: Harbour & Finch's order desk, where every request is a tool call.

    python examples/tools/generate.py            # rewrites the files beside this script
    python examples/tools/generate.py --out DIR  # writes them somewhere else

Deterministic (fixed seed): running it again gives byte-identical files, and a test checks that the committed
files are exactly what it writes. The shop is the homeware shop of the style example; its order desk has the
functions such a shop's assistant would have (``tools.json``):

- ``get_order_status(order_id)``: where an order is;
- ``get_shipping_status(tracking_number, carrier)``: a parcel with a Royal Mail, DPD or Evri tracking number;
- ``request_refund(order_id, amount, reason)``: ``reason`` one of damaged, late, wrong_item, changed_mind;
- ``cancel_order(order_id)``.

Each example is a customer's message and the assistant's call(s) (``tool_calls``): the right function, and the
arguments read out of the message (an order number ``HF-12345``, a price ``£24.50`` as the number 24.5, the
carrier from the tracking number or its name, the reason from how the customer puts it). About one message in
eight asks for two things at once and gets two calls. Every function is ``strict`` (OpenAI's strict function
calling: all properties required, no others), so constrained decoding can hold the arguments to the schemas.

Files:

- ``train.jsonl`` (100 examples) and ``test.jsonl`` (40): the short system prompt, the message, the calls; every
  example carries the same ``tools``.
- ``system_prompt_short.txt``: one line; ``system_prompt_long.txt``: how to pick each function and read its
  arguments, spelt out for the base model.
- ``tools.json``: the functions.
- ``candidates.yaml``: the base model with the long prompt (tool_choice auto), the base model made to call a
  function (tool_choice required: the calls constrained to the schemas, the format without training), and the
  fine-tuned model with the short prompt; all given the same tools.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

SEED = 20241213
N_TRAIN = 100
N_TEST = 40
PAIR_SHARE = 0.125

SHORT_PROMPT = "You are the Harbour & Finch order desk. Answer each request with the right function call."
LONG_PROMPT = """\
You are the order desk of Harbour & Finch, a homeware shop. Every customer message asks for something the
functions can do: answer it with function calls only, no text.

- Where is an order (an order number like HF-12345)? Call get_order_status with the order_id.
- A parcel with a tracking number? Call get_shipping_status with the tracking_number exactly as written and the
  carrier: "Royal Mail" (numbers like RM123456789GB), "DPD" (14 digits) or "Evri" (H and 15 letters and digits).
- Money back? Call request_refund with the order_id, the amount as a number (24.50 for £24.50) and the reason:
  "damaged" (broken, cracked, chipped), "late" (it came late), "wrong_item" (not what was ordered) or
  "changed_mind" (no longer wanted).
- Cancel an order? Call cancel_order with the order_id.
- A message that asks for two things gets two calls, in the order it asks for them.
"""

ORDER_ID = {"type": "string"}


def _function(name: str, properties: dict) -> dict:
    # No descriptions: the names say what each does, and every token of the definitions is in every prompt.
    return {"type": "function", "function": {
        "name": name, "strict": True,
        "parameters": {"type": "object", "properties": properties, "required": list(properties),
                       "additionalProperties": False}}}


TOOLS = [
    _function("get_order_status", {"order_id": ORDER_ID}),
    _function("get_shipping_status", {"tracking_number": {"type": "string"},
                                      "carrier": {"type": "string", "enum": ["Royal Mail", "DPD", "Evri"]}}),
    _function("request_refund", {"order_id": ORDER_ID, "amount": {"type": "number"},
                                 "reason": {"type": "string", "enum": ["damaged", "late", "wrong_item",
                                                                       "changed_mind"]}}),
    _function("cancel_order", {"order_id": ORDER_ID}),
]

PRODUCTS = ["lamp", "vase", "rug", "mirror", "kettle", "teapot", "throw", "cushion", "candle set", "side table",
            "bread bin", "clock", "jug", "set of mugs", "doormat", "planter", "towel set", "fruit bowl"]
STATUS = [
    "Where is my order {o}?",
    "Any update on order {o}?",
    "Can you check the status of {o} please",
    "I ordered a {p} last week, order number {o}. Has it been sent yet?",
    "Has {o} shipped?",
    "Hi, what is happening with my order {o}? It has been a few days.",
    "order {o} - where is it",
    "Could you tell me whether my {p} (order {o}) is on its way?",
]
SHIPPING = [
    "My {c} tracking number is {t}, where is the parcel?",
    "Can you track {t} with {c}?",
    "The parcel with my {p} is with {c}, tracking {t}. Where is it now?",
    "tracking number {t} ({lc}) - any news?",
    "{c} says {t} is delayed. Can you check where it is?",
    "Where is parcel {t}? It was sent by {c}.",
]
REFUND = {
    "damaged": ["The {p} in order {o} arrived broken. Please refund the £{a}.",
                "My {p} came cracked (order {o}). I'd like my £{a} back.",
                "Order {o}: the {p} was chipped when I opened it, refund of £{a} please."],
    "late": ["Order {o} came two weeks late, so I would like £{a} back.",
             "The {p} from {o} arrived long after the date you gave. Please refund £{a}.",
             "{o} was late for the birthday it was for. Can I have a refund of £{a}?"],
    "wrong_item": ["You sent me the wrong {p} in order {o}. Refund the £{a}, please.",
                   "Order {o} had someone else's {p} in it, not mine. I want my £{a} back.",
                   "That is not the {p} I ordered ({o}). Please refund £{a}."],
    "changed_mind": ["I changed my mind about the {p} in order {o}, can I get my £{a} back?",
                     "I no longer want the {p} from {o}. Please refund £{a}.",
                     "Order {o}: I've decided against the {p}, so a refund of £{a} please."],
}
CANCEL = [
    "Please cancel order {o}.",
    "I no longer need {o}, cancel it please.",
    "Cancel my order {o} before it ships.",
    "Can you stop order {o}? I ordered the {p} by mistake.",
    "cancel {o} thanks",
]
def _order(rng: random.Random) -> str:
    return f"HF-{rng.randint(10000, 99999)}"


def _tracking(rng: random.Random, carrier: str) -> str:
    if carrier == "Royal Mail":
        return f"RM{rng.randint(100000000, 999999999)}GB"
    if carrier == "DPD":
        return "".join(rng.choice(string.digits) for _ in range(14))
    return "H" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(15))


def _amount(rng: random.Random) -> tuple[str, float]:
    pence = rng.randint(4, 180) * 50 + rng.choice([0, 0, 0, 49])
    return f"{pence / 100:.2f}", pence / 100


def _request(rng: random.Random) -> tuple[str, list[tuple[str, dict]]]:
    """One request: its wording (a sentence) and its call."""
    kind = rng.choice(["status", "shipping", "refund", "cancel"])
    o, p = _order(rng), rng.choice(PRODUCTS)
    if kind == "status":
        return rng.choice(STATUS).format(o=o, p=p), [("get_order_status", {"order_id": o})]
    if kind == "shipping":
        c = rng.choice(["Royal Mail", "DPD", "Evri"])
        t = _tracking(rng, c)
        text = rng.choice(SHIPPING).format(t=t, c=c, lc=c.lower(), p=p)
        return text, [("get_shipping_status", {"tracking_number": t, "carrier": c})]
    if kind == "refund":
        reason = rng.choice(list(REFUND))
        shown, value = _amount(rng)
        text = rng.choice(REFUND[reason]).format(o=o, p=p, a=shown)
        return text, [("request_refund", {"order_id": o, "amount": value, "reason": reason})]
    return rng.choice(CANCEL).format(o=o, p=p), [("cancel_order", {"order_id": o})]


def make(rng: random.Random, seen: set[str]) -> tuple[str, list[tuple[str, dict]]]:
    """A customer message never seen before, and its calls (two when it asks for two things)."""
    while True:
        text, calls = _request(rng)
        if rng.random() < PAIR_SHARE:
            second, more = _request(rng)
            if more[0][0] != calls[0][0]:
                text, calls = f"{text} Also: {second[0].lower()}{second[1:]}", calls + more
        if text not in seen:
            seen.add(text)
            return text, calls


def example(rng: random.Random, system: str, text: str, calls: list[tuple[str, dict]]) -> dict:
    tool_calls = [{"id": "call_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24)),
                   "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                  for name, args in calls]
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": text},
                         {"role": "assistant", "tool_calls": tool_calls}],
            "tools": TOOLS, "parallel_tool_calls": True}


CANDIDATES = """\
# Candidates for the function-calling example: every one is given the example's tools (the test file's `tools`).
#
#   tunewise eval examples/tools/test.jsonl --candidates examples/tools/candidates.yaml --out eval-tools
#   tunewise decide eval-tools --primary accuracy --calls-per-month 100000 \\
#       --training-file examples/tools/train.jsonl --model gpt-4o-mini
#
# Paths are relative to this file; export TUNEWISE_FT_MODEL=<the job's fine_tuned_model> for the last one.
candidates:
  # The base model with every rule spelt out; it may answer with text or call a function.
  - name: base-long-prompt
    model: smollm2-135m-instruct
    system_prompt_file: system_prompt_long.txt
    max_tokens: 120
    price_model: gpt-4o-mini

  # The base model made to call: tool_choice required constrains the answer to calls of the defined functions
  # with arguments matching their schemas (the format without training, as structured outputs give it).
  - name: base-required
    model: smollm2-135m-instruct
    kind: structured
    system_prompt_file: system_prompt_long.txt
    tool_choice: required
    max_tokens: 120
    price_model: gpt-4o-mini

  # The fine-tuned model with the one-line prompt.
  - name: fine-tuned
    model: ${TUNEWISE_FT_MODEL}
    kind: fine-tuned
    system_prompt_file: system_prompt_short.txt
    max_tokens: 120
    price_model: gpt-4o-mini
"""


def build() -> dict[str, str]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    train = [example(rng, SHORT_PROMPT, *make(rng, seen)) for _ in range(N_TRAIN)]
    test = [example(rng, SHORT_PROMPT, *make(rng, seen)) for _ in range(N_TEST)]

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    return {"train.jsonl": jsonl(train), "test.jsonl": jsonl(test), "system_prompt_short.txt": SHORT_PROMPT + "\n",
            "system_prompt_long.txt": LONG_PROMPT, "tools.json": json.dumps(TOOLS, indent=2) + "\n",
            "candidates.yaml": CANDIDATES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="directory to write into (default: beside this script)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in build().items():
        # newline="" keeps "\n" on every platform, so the bytes match the committed files.
        with open(args.out / name, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
