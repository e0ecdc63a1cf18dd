"""Write the receipts task's preference (DPO) files from its chat files: the right answer against a plausible wrong one.

    python examples/receipts/preferences.py            # rewrites the files beside this script
    python examples/receipts/preferences.py --out DIR  # writes them somewhere else

Deterministic (fixed seed, and the chat files are themselves generated with one): running it again gives
byte-identical files, and a test checks that the committed files are exactly what it writes. Files:

- ``train_dpo.jsonl`` (200 examples, from ``train.jsonl``) and ``test_dpo.jsonl`` (50, from ``test.jsonl``), in
  OpenAI's preference format: ``input`` holds the system prompt and the receipt, ``preferred_output`` the right
  answer, ``non_preferred_output`` one wrong answer of the kinds a receipt parser makes:

  - ``total_as_item``: a subtotal, tax, tip or total line of the receipt listed as a product (receipts with such
    a line);
  - ``misread_price``: one price misread (the decimal point moved, or two digits swapped);
  - ``quantity_in_name``: a quantity marker kept in a name ("2x Bagel"), for receipts with a quantity;
  - ``missed_item``: the last product left out (receipts with two or more).

  The kind is drawn per example, among those that apply, from a seeded generator; ``KINDS`` in the output of
  ``build`` counts them.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SEED = 20240719
HERE = Path(__file__).resolve().parent
SOURCES = {"train_dpo.jsonl": "train.jsonl", "test_dpo.jsonl": "test.jsonl"}
# A non-item line of a receipt, as generate.py prints them: its label, then a separator, then the amount.
NON_ITEM = re.compile(r"(?P<label>Sub-total|SUBTOTAL|Subtotal|subtotal|Sales Tax [\d.]+%|VAT [\d.]+%|TAX|Tax|"
                      r"Gratuity 18%|Tip|Total Due|AMOUNT DUE|Balance|TOTAL|Total|total)"
                      r"[\s.:;|\-\t]*(?P<amount>(?:[$£]|EUR |USD )?\d+[.,]\d{2}(?: ?(?:€|USD|EUR))?)")
QUANTITY = re.compile(r"(\d+x |x\d+\b|\(x\d+\)|\d+ @ |qty \d+ )")


def _amount(text: str) -> float:
    digits = re.sub(r"[^\d.,]", "", text).replace(",", ".")
    return round(float(digits), 2)


def _misread(price: float, rng: random.Random) -> float:
    """A plausible misreading of a printed price: the decimal point one place off, or two digits swapped."""
    text = f"{price:.2f}".replace(".", "")
    options = [round(price * 10, 2), round(price / 10, 2)]
    swapped = [text[:i] + text[i + 1] + text[i] + text[i + 2:] for i in range(len(text) - 1) if text[i] != text[i + 1]]
    options += [round(int(s) / 100, 2) for s in swapped]
    options = [p for p in options if p != price and p > 0]
    return rng.choice(options) if options else round(price + 1, 2)


def wrong_answer(receipt: str, items: list[dict], rng: random.Random) -> tuple[str, list[dict]]:
    """A wrong answer for this receipt and the kind of mistake it is."""
    kinds = ["misread_price"]
    non_items = [m for m in NON_ITEM.finditer(receipt)]
    if non_items:
        kinds.append("total_as_item")
    labelled = [line for line in receipt.replace(", ", "\n").replace("; ", "\n").splitlines() if QUANTITY.search(line)]
    if labelled:
        kinds.append("quantity_in_name")
    if len(items) >= 2:
        kinds.append("missed_item")
    kind = rng.choice(kinds)
    wrong = [dict(item) for item in items]
    if kind == "total_as_item":
        match = rng.choice(non_items)
        wrong.append({"name": match.group("label"), "price": _amount(match.group("amount"))})
    elif kind == "misread_price":
        k = rng.randrange(len(wrong))
        wrong[k]["price"] = _misread(wrong[k]["price"], rng)
    elif kind == "quantity_in_name":
        for item in wrong:
            line = next((line for line in labelled if item["name"] in line), None)
            if line is not None:
                marker = QUANTITY.search(line).group(1).strip()
                item["name"] = f"{marker} {item['name']}" if line.index(marker) < line.index(item["name"]) \
                    else f"{item['name']} {marker}"
                break
        else:  # the quantity is on a line whose name was cased differently: fall back to a misread price
            kind = "misread_price"
            wrong[0]["price"] = _misread(wrong[0]["price"], rng)
    else:
        wrong.pop()
    return kind, wrong


def preference(example: dict, rng: random.Random) -> tuple[str, dict]:
    *context, reply = example["messages"]
    items = json.loads(reply["content"])["items"]
    receipt = next(m["content"] for m in context if m["role"] == "user")
    kind, wrong = wrong_answer(receipt, items, rng)
    return kind, {"input": {"messages": context},
                  "preferred_output": [reply],
                  "non_preferred_output": [{"role": "assistant",
                                            "content": json.dumps({"items": wrong}, ensure_ascii=False)}]}


def build(source_dir: Path = HERE) -> tuple[dict[str, str], dict[str, int]]:
    """Every file's name and exact text, and how many examples of each kind of mistake they hold."""
    rng = random.Random(SEED)
    files: dict[str, str] = {}
    kinds: dict[str, int] = {}
    for name, source in SOURCES.items():
        rows = []
        for raw in (source_dir / source).read_text(encoding="utf-8").splitlines():
            kind, row = preference(json.loads(raw), rng)
            kinds[kind] = kinds.get(kind, 0) + 1
            rows.append(json.dumps(row, ensure_ascii=False) + "\n")
        files[name] = "".join(rows)
    return files, kinds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into (default: beside this script)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files, kinds = build()
    for name, text in files.items():
        with open(args.out / name, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        print(f"wrote {args.out / name}")
    print("non-preferred answers: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))


if __name__ == "__main__":
    main()
