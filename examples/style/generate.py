"""Write the style-and-tone example data set: customer-support replies in a fixed house voice.

    python examples/style/generate.py            # rewrites the files beside this script
    python examples/style/generate.py --out DIR  # writes them somewhere else

Deterministic (fixed seed): running it again gives byte-identical files, and a test checks that the committed
files are exactly what it writes. The task is the guide's "style and tone" case: what is wanted is not a fact
or a format but a voice, and every rule of the voice can be checked by a grader (``graders.yaml``):

- the reply opens with the greeting line ``Hello,``;
- it closes with the sign-off ``Kind regards,`` and ``The Harbour & Finch team`` on the last two lines;
- British spelling (colour, apologise, cancelled, ...), never the American forms;
- no exclamation marks;
- at most three sentences between the greeting and the sign-off.

Files:

- ``train.jsonl`` (120 examples) and ``test.jsonl`` (40): messages about orders, deliveries, returns and refunds,
  written in an everyday register, with the short system prompt the fine-tuned model is called with.
- ``test_shifted.jsonl`` (40): the shifted distribution. Other topics (accounts, billing, the website, product
  care) in other registers: angry messages full of exclamation marks and capitals, and formal letters, both
  with American spellings the reply must not echo. Few-shot examples come from the first distribution only, so
  this split tests the guide's claim that few-shot examples degrade under a shift and fine-tuning does not.
- ``system_prompt_short.txt``: one line; ``system_prompt_long.txt``: every rule spelt out for the base model.
- ``few_shot.jsonl``: a few user/assistant turns from the first distribution.
- ``graders.yaml``: the rules as OpenAI graders (string_check and python, combined by a multi grader
  ``house_style``, the decision's primary measure).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20241105
N_TRAIN = 120
N_TEST = 40
N_SHIFTED = 40
N_FEW_SHOT = 3
MAX_SENTENCES = 3

GREETING = "Hello,"
SIGN_OFF = "Kind regards,\nThe Harbour & Finch team"
SHORT_PROMPT = "You answer customer messages for Harbour & Finch in the house style."

LONG_PROMPT = f"""\
You write replies to customer messages for Harbour & Finch, a homeware shop. Every reply follows the house style
exactly.

House style
- The first line is exactly "{GREETING}" and nothing else.
- Then one short paragraph of at most {MAX_SENTENCES} sentences that answers the message: acknowledge the problem,
  say what happens next, and give a time or a step the customer can take.
- The reply ends with two lines: "Kind regards," and then "The Harbour & Finch team".
- Use British spelling: colour, favourite, apologise, organise, realise, cancelled, centre, catalogue,
  behaviour, customise.
- Never use exclamation marks, even when the customer does. Stay calm, warm and plain.
- Do not repeat the customer's spelling if it is American; do not use capitals for emphasis.

Example reply:
{GREETING}

I am sorry that your parcel has not arrived yet. I have asked our courier to trace it and will write again
within two working days.

{SIGN_OFF}
"""

# The words a reply may need, with the American form the spelling grader refuses.
BRITISH = {"colour": "color", "colours": "colors", "favourite": "favorite", "apologise": "apologize",
           "apologies": None, "organise": "organize", "organised": "organized", "realise": "realize",
           "cancelled": "canceled", "centre": "center", "catalogue": "catalog", "behaviour": "behavior",
           "customise": "customize", "authorise": "authorize", "authorised": "authorized",
           "recognise": "recognize", "jewellery": "jewelry", "grey": "gray", "cheque": "check"}
AMERICAN = sorted(a for a in BRITISH.values() if a and a != "check")

ITEMS = ["linen cushion", "oak side table", "ceramic vase", "wool throw", "table lamp", "set of tumblers",
         "bath mat", "wall clock", "storage basket", "grey rug", "cotton duvet cover", "enamel jug"]
COLOURS = ["sage", "navy", "terracotta", "grey", "mustard", "ivory"]
DAYS = ["two", "three", "five"]

# In-distribution: orders, deliveries, returns and refunds, in an everyday register.
# Each topic: (user message templates, reply sentence templates; the reply takes 2 or 3 of them in order).
TOPICS_IN = {
    "late delivery": (
        ["Hi, my {item} (order {order}) still hasn't arrived and it's been a week. Can you check?",
         "Hello, order {order} was due on Monday but nothing has come. Where is my {item}?",
         "hey, any news on order {order}? the {item} was meant to be here by now",
         "Hi there, I ordered a {item} ten days ago (order {order}) and I'm still waiting for it."],
        ["I am sorry that your {item} has not arrived yet.",
         "I have asked our courier to trace order {order} and will write again within {days} working days.",
         "If it has not reached you by then, we will send a replacement at no cost."]),
    "wrong colour": (
        ["Hi, I ordered the {item} in {colour} but it came in a different colour. Order {order}.",
         "Hello, the {item} from order {order} is the wrong colour, I asked for {colour}.",
         "hi, got my {item} today but it's not {colour} like I picked. order {order}"],
        ["I apologise that the {item} arrived in the wrong colour.",
         "A {colour} one is on its way to you and should arrive within {days} working days.",
         "Please keep the first one until our courier collects it, which costs you nothing."]),
    "return": (
        ["Hi, I'd like to return the {item} from order {order}, it doesn't suit the room.",
         "Hello, can I send back my {item}? Order {order}. It's unused.",
         "hi, how do I return a {item}? order number {order}"],
        ["Thank you for letting us know that you would like to return the {item}.",
         "I have emailed you a free returns label for order {order}, and you have 30 days to use it.",
         "Your refund will follow within {days} working days of the parcel reaching our returns centre."]),
    "refund": (
        ["Hi, I returned my {item} two weeks ago but haven't had my refund yet. Order {order}.",
         "Hello, still no refund for order {order}, the {item} went back ages ago.",
         "hi, when will I get my money back for the {item}? order {order}"],
        ["I apologise for the wait for your refund.",
         "Our returns centre has your {item} from order {order}, and the refund was authorised today.",
         "It should reach your account within {days} working days."]),
    "cancel order": (
        ["Hi, please can you cancel order {order}? I ordered the {item} by mistake.",
         "Hello, I need to cancel my order {order} for the {item}.",
         "hi, can I still cancel the {item}? order {order}"],
        ["Thank you for getting in touch so quickly.",
         "Order {order} for the {item} is now cancelled and you will not be charged.",
         "You will receive an email confirming this within {days} hours."]),
    "damaged": (
        ["Hi, my {item} arrived broken. Order {order}. What can I do?",
         "Hello, the {item} in order {order} was damaged in the box.",
         "hi, the {item} came cracked, order {order}"],
        ["I am very sorry that your {item} arrived damaged.",
         "A replacement for order {order} will be with you within {days} working days.",
         "There is no need to send the damaged one back."]),
}

# Shifted: other topics, other registers.
TOPICS_SHIFTED = {
    "account locked": (
        ["My account is LOCKED again!!! I have tried to log in five times! Fix this NOW!",
         "Dear Sir or Madam, I am writing to inform you that I am unable to access my account. I would be "
         "grateful if you could authorize a reset at your earliest convenience. Yours faithfully, {name}"],
        ["I am sorry that you cannot get into your account.",
         "I have unlocked it and sent a link to reset your password to the address we hold for you.",
         "The link works for {days} hours."]),
    "double charge": (
        ["You CHARGED me TWICE for order {order}!!! I want my money back today!",
         "Dear Harbour & Finch, I have noticed two identical charges for order {order} on my statement. "
         "I would appreciate it if you could look into this matter. Sincerely, {name}"],
        ["I apologise for the second charge for order {order}.",
         "I have refunded it today, and it should reach your account within {days} working days."]),
    "website colour filter": (
        ["Your website is USELESS! The color filter shows the wrong colors every time!",
         "To whom it may concern, I wish to report that the color filter on your catalog pages does not "
         "behave as expected. Kind regards, {name}"],
        ["Thank you for telling us about the colour filter.",
         "Our web team has found the fault and will fix it within {days} days.",
         "Until then, each product page shows every colour it comes in."]),
    "product care": (
        ["How on earth do I clean this {item}?! The label is useless and I've already ruined one!",
         "Dear Sir or Madam, I would be grateful for guidance on the care of my {item}, as I wish to avoid "
         "damaging it. Yours sincerely, {name}"],
        ["I am sorry that the care label was not clear.",
         "For the {item}, a damp cloth and mild soap are best, and it should dry away from direct heat.",
         "I have emailed you our full care guide as well."]),
    "favorite list": (
        ["My favorites list has DISAPPEARED! Months of saved items, gone!!",
         "Dear Harbour & Finch, I have noticed that the items saved to my favorites list are no longer "
         "visible. I would appreciate your assistance. Sincerely, {name}"],
        ["I apologise that your favourites list has gone missing.",
         "I have restored the saved items from our records, and they are back in your account now."]),
    "gift card": (
        ["My gift card code doesn't work!!! I've tried it ten times at checkout!",
         "Dear Sir or Madam, the gift card I received does not appear to be recognized at checkout. "
         "I would be grateful if you could investigate. Yours faithfully, {name}"],
        ["I am sorry that your gift card was not accepted.",
         "I have checked the code and renewed it, so it will work at checkout from today.",
         "Its balance is unchanged."]),
}
NAMES = ["A. Patel", "J. Morgan", "R. Okafor", "L. Chen", "M. Novak", "S. Haddad"]


def reply(sentences: list[str]) -> str:
    return f"{GREETING}\n\n{' '.join(sentences)}\n\n{SIGN_OFF}"


def make(rng: random.Random, topics: dict, seen: set[str]) -> tuple[str, str]:
    """One (message, reply) pair not seen before."""
    while True:
        name = rng.choice(sorted(topics))
        asks, answers = topics[name]
        slots = {"item": rng.choice(ITEMS), "order": f"HF-{rng.randint(10000, 99999)}",
                 "colour": rng.choice(COLOURS), "days": rng.choice(DAYS), "name": rng.choice(NAMES)}
        message = rng.choice(asks).format(**slots)
        if message in seen:
            continue
        seen.add(message)
        n = len(answers) if len(answers) <= 2 else rng.choice([2, 3])
        return message, reply([s.format(**slots) for s in answers[:n]])


def example(system: str | None, message: str, answer: str) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]}


# The graders' python sources: the rules a string check cannot express.
SPELLING_SOURCE = f"""\
import re

AMERICAN = {AMERICAN!r}


def grade(sample, item):
    text = sample["output_text"].lower()
    return 0.0 if any(re.search(r"\\b" + word + r"\\b", text) for word in AMERICAN) else 1.0
"""

BRIEF_SOURCE = f"""\
import re


def grade(sample, item):
    lines = [line.strip() for line in sample["output_text"].strip().splitlines() if line.strip()]
    body = " ".join(line for line in lines if line not in ("Hello,", "Kind regards,", "The Harbour & Finch team"))
    sentences = [s for s in re.split(r"(?<=[.?!])\\s+", body) if s.strip()]
    return 1.0 if 1 <= len(sentences) <= {MAX_SENTENCES} else 0.0
"""


def graders_yaml() -> str:
    import textwrap

    def block(source: str, indent: int) -> str:
        return textwrap.indent(source, " " * indent)

    return f"""\
# The house style as OpenAI graders: `tunewise eval TEST --grader graders.yaml`, and the decision's primary
# measure with `tunewise decide EVAL --primary house_style`. Written by generate.py.
graders:
  - type: string_check
    name: greeting
    input: "{{{{ sample.output_text }}}}"
    reference: "{GREETING}"
    operation: like
  - type: string_check
    name: sign_off
    input: "{{{{ sample.output_text }}}}"
    reference: "The Harbour & Finch team"
    operation: like
  - type: multi
    name: no_exclamation
    graders:
      bang:
        type: string_check
        name: bang
        input: "{{{{ sample.output_text }}}}"
        reference: "!"
        operation: like
    calculate_output: "1 - bang"
  - type: python
    name: british_spelling
    source: |
{block(SPELLING_SOURCE, 6)}
  - type: python
    name: brief
    source: |
{block(BRIEF_SOURCE, 6)}
  # Every rule at once: 1 only for a reply in the house style.
  - type: multi
    name: house_style
    graders:
      greeting:
        type: string_check
        name: greeting
        input: "{{{{ sample.output_text }}}}"
        reference: "{GREETING}"
        operation: like
      sign_off:
        type: string_check
        name: sign_off
        input: "{{{{ sample.output_text }}}}"
        reference: "The Harbour & Finch team"
        operation: like
      bang:
        type: string_check
        name: bang
        input: "{{{{ sample.output_text }}}}"
        reference: "!"
        operation: like
      spelling:
        type: python
        name: spelling
        source: |
{block(SPELLING_SOURCE, 10)}
      brief:
        type: python
        name: brief
        source: |
{block(BRIEF_SOURCE, 10)}
    calculate_output: "greeting * sign_off * (1 - bang) * spelling * brief"
"""


def build() -> dict[str, str]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    train = [example(SHORT_PROMPT, *make(rng, TOPICS_IN, seen)) for _ in range(N_TRAIN)]
    test = [example(SHORT_PROMPT, *make(rng, TOPICS_IN, seen)) for _ in range(N_TEST)]
    shifted = [example(SHORT_PROMPT, *make(rng, TOPICS_SHIFTED, seen)) for _ in range(N_SHIFTED)]
    few_shot = [example(None, *make(rng, TOPICS_IN, seen)) for _ in range(N_FEW_SHOT)]

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    return {"train.jsonl": jsonl(train), "test.jsonl": jsonl(test), "test_shifted.jsonl": jsonl(shifted),
            "few_shot.jsonl": jsonl(few_shot), "system_prompt_short.txt": SHORT_PROMPT + "\n",
            "system_prompt_long.txt": LONG_PROMPT, "graders.yaml": graders_yaml()}


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
