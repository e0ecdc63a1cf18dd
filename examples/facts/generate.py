"""Write the facts example data set (the guide's negative claim): questions about a fictional outdoor-gear catalogue.

    python examples/facts/generate.py            # rewrites the files beside this script
    python examples/facts/generate.py --out DIR  # writes them somewhere else

Deterministic (fixed seed): running it again gives byte-identical files, and a test checks that the committed
files are exactly what it writes. The guide: "Fine-tuning does NOT help with factual knowledge (the model doesn't
learn new facts, only new behaviors)". This task lets an evaluation say so. Brightwater Outfitters' catalogue
(``catalogue()``) has 42 invented products, each with four facts no model can know: the price, the weight, the
town it is made in and its product code.

Files:

- ``train.jsonl`` (120 examples): one question about each fact of 30 products, with the short system prompt
  and no catalogue in it, so these facts appear only in the training examples' answers.
- ``test.jsonl`` (48): one question about each fact of the other 12 products, facts never trained on. Each
  example's system message is the short prompt followed by that product's catalogue entry: what a retrieval
  step would put in the prompt. A candidate with no ``system_prompt`` keeps it (the base model with the facts
  in the prompt); a candidate with ``system_prompt_file: system_prompt_short.txt`` replaces it (the fine-tuned
  model, and the base model without the facts).
- ``system_prompt_short.txt``: the one-line prompt; ``catalogue.json``: every product's entry, and which split
  asks about it.
- ``graders.yaml``: ``fact`` (python: the answer gives the reference's value, ignoring case, spaces and commas, and no
  other value of the product's entry), the decision's primary measure.

No question appears in two splits, and no product of the test split is named anywhere in the training split.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20241219
N_TRAIN_PRODUCTS = 30
N_TEST_PRODUCTS = 12
COMPANY = "Brightwater Outfitters"
SHORT_PROMPT = f"You answer questions about the {COMPANY} catalogue. Answer with the fact only."

NAMES = ["Fennick", "Marlow", "Tarrow", "Quillan", "Brisco", "Hadley", "Orwin", "Selby", "Cawder", "Dunmere",
         "Elstow", "Gorran", "Kelso", "Lyndon", "Morven", "Nettle", "Pendle", "Ravell", "Skelwith", "Thirlby",
         "Ullock", "Varden", "Wray", "Yarrow", "Ashlow", "Bellan", "Corrie", "Dallow", "Ferrin", "Glaze",
         "Harrow", "Ingle", "Jessop", "Kirkby", "Larch", "Mallen", "Norris", "Oakum", "Pellow", "Rudd",
         "Stanage", "Tolley"]
KINDS = ["trail stove", "bivvy bag", "trekking pole", "head torch", "down jacket", "rain shell", "daypack",
         "sleeping mat", "water filter", "camp mug", "tent", "gaiters", "fleece", "map case"]
TOWNS = ["Thornbury", "Ashwell", "Kelmscott", "Brampton", "Cotterill", "Dunsford", "Elmridge", "Farleigh",
         "Greystoke", "Holloway", "Ingleby", "Kirkwall", "Langdale", "Merriot", "Netherby", "Oxenhope",
         "Pitlochry", "Quorn", "Redmire", "Sedbergh", "Tillington", "Upwey", "Wragby", "Yarm"]

QUESTIONS = {
    "price": ["How much does the {name} cost?", "What is the price of the {name}?", "How much is the {name}?"],
    "weight": ["How heavy is the {name}?", "What does the {name} weigh?", "What is the weight of the {name}?"],
    "made_in": ["Where is the {name} made?", "Which town is the {name} made in?", "Where do you make the {name}?"],
    "code": ["What is the product code of the {name}?", "What's the catalogue code for the {name}?",
             "Which product code does the {name} have?"],
}
FACTS = list(QUESTIONS)


def catalogue() -> list[dict]:
    """Every product and its four facts, in a fixed order (the first ``N_TRAIN_PRODUCTS`` are trained on)."""
    rng = random.Random(SEED)
    names = rng.sample(NAMES, N_TRAIN_PRODUCTS + N_TEST_PRODUCTS)
    codes = rng.sample(range(1000, 10000), len(names))
    out = []
    for i, (first, code) in enumerate(zip(names, codes, strict=True)):
        out.append({"name": f"{first} {rng.choice(KINDS)}", "price": f"£{rng.randint(12, 480)}",
                    "weight": f"{rng.randint(8, 480) * 10} g", "made_in": rng.choice(TOWNS),
                    "code": f"BW-{code}", "split": "train" if i < N_TRAIN_PRODUCTS else "test"})
    return out


def entry(product: dict) -> str:
    """The product's catalogue entry, as a retrieval step would put it in the prompt."""
    return (f"{product['name']}: price {product['price']}; weight {product['weight']}; made in "
            f"{product['made_in']}; product code {product['code']}.")


def example(system: str, question: str, answer: str) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


FACT_SOURCE = """\
import re


def norm(text):
    return re.sub(r"[\\s,]+", "", text).casefold().replace("grams", "g").replace("gram", "g")


def grade(sample, item):
    answer, value = norm(sample["output_text"]), norm(item["reference"])
    if not value or value not in answer:
        return 0.0
    # Giving the whole catalogue entry is not an answer: no other value of the product may appear.
    system = next((m["content"] for m in item["messages"] if m["role"] == "system"), "")
    others = re.findall(r"(?:price|weight|made in|product code) ([^;]+?)(?:;|\\.$)", system)
    return 0.0 if any(norm(o) != value and norm(o) in answer for o in others) else 1.0
"""


def graders_yaml() -> str:
    import textwrap

    return f"""\
# The facts task's grader: `tunewise eval TEST --grader graders.yaml`, and the decision's primary measure with
# `tunewise decide EVAL --primary fact --claim facts`. Written by generate.py.
graders:
  # The answer gives the reference's value (ignoring case, spaces and commas) and no other value of the entry.
  - type: python
    name: fact
    source: |
{textwrap.indent(FACT_SOURCE, " " * 6)}"""


def build() -> dict[str, str]:
    products = catalogue()
    rng = random.Random(SEED + 1)
    train, test = [], []
    for product in products:
        for fact in FACTS:
            question = rng.choice(QUESTIONS[fact]).format(name=product["name"])
            if product["split"] == "train":
                train.append(example(SHORT_PROMPT, question, product[fact]))
            else:
                test.append(example(f"{SHORT_PROMPT}\n\nCatalogue entry: {entry(product)}", question,
                                    product[fact]))
    # Shuffled, so any first N examples (the demo's --limit) mix products and facts.
    rng.shuffle(train)
    rng.shuffle(test)

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    return {"train.jsonl": jsonl(train), "test.jsonl": jsonl(test),
            "system_prompt_short.txt": SHORT_PROMPT + "\n",
            "catalogue.json": json.dumps(products, indent=2, ensure_ascii=False) + "\n",
            "graders.yaml": graders_yaml()}


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
