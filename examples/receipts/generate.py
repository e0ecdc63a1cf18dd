"""Write the receipts example data set: the guide's task (product names and prices from receipt text).

    python examples/receipts/generate.py            # rewrites the files beside this script
    python examples/receipts/generate.py --out DIR  # writes them somewhere else

Deterministic (fixed seed): running it again gives byte-identical files, and a test checks that the committed
files are exactly what it writes. Files:

- ``train.jsonl`` (200 examples) and ``test.jsonl`` (50, no receipt text shared with train): chat examples
  whose system prompt is the short one, the prompt the fine-tuned model is called with.
- ``schema.json``: JSON Schema of the answer.
- ``system_prompt_long.txt``: the prompt-engineering alternative (rules and format spec) for the base model.
- ``system_prompt_short.txt``: the guide's one-liner.
- ``few_shot.jsonl``: a few user/assistant turns that can be prepended to the long prompt.

The answer is exactly the guide's shape, ``{"items": [{"name": str, "price": number}]}``: one item per product
line, in receipt order; ``name`` as printed, without quantity markers ("2x", "x3", "3 @ 1.25"); ``price`` the
amount charged for the line (for "2x Bagel 6.00", 6.0). Subtotal, tax, tip, total, payment and change lines are
not items and never appear in the answer; there is no ``total`` field (the guide's answers have none, and a
total can be summed from the items).

Receipts vary in every way that trips up a prompt: the guide's inline "Coffee - $4.50, Bagel - $3.00", one item
per line, tab, pipe and semicolon separators, dot leaders, currency symbols or codes before or after the amount,
decimal commas, quantities, store headers and footers, totals/tax/subtotal lines, and upper/lower/title-case names.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20240718
N_TRAIN = 200
N_TEST = 50

SHORT_PROMPT = "You extract product names and prices from receipts. Return JSON only."

LONG_PROMPT = """\
You are a receipt parser. You read the text of one shop receipt and return the products bought and their prices.

Output format
- Return a single JSON object and nothing else: no prose, no Markdown, no code fences.
- The object has exactly one key, "items": a list with one object per product line, in the order the products
  appear on the receipt.
- Each item has exactly two keys: "name" (string) and "price" (number).
- Example: {"items": [{"name": "Coffee", "price": 4.5}, {"name": "Bagel", "price": 3.0}]}
- If the receipt lists no products, return {"items": []}.

Names
- Copy the product name as printed, keeping its capitalisation, words and digits (for example "AA Batteries
  4-pack" or "MILK 2%").
- Leave out quantity markers such as "2x", "x3", "(x2)", "3 @ 1.25" or "qty 2", and leave out the separator and
  the price.

Prices
- "price" is the amount charged for that line, as a JSON number without a currency symbol or code
  ("$4.50", "4.50 USD", "EUR 4,50" and "4,50 €" all mean 4.5).
- When a line shows a quantity, a unit price and a line amount ("3 @ 1.25 = 3.75"), use the line amount (3.75).
  When it shows a quantity and one amount ("2x Bagel 6.00"), that amount is the line amount.
- A comma before exactly two final digits is a decimal comma.

Not products
- Ignore store names, addresses, phone numbers, dates, times, receipt or order numbers, cashier and table lines,
  greetings and footers.
- Ignore subtotal, tax, VAT, tip, service charge, total, amount due, balance, payment (cash, card, visa) and
  change lines: they are not products, even though they carry amounts.

Separators vary: items may be on one line separated by commas or semicolons, or one per line with the price
after a space, a dash, a tab, a pipe, a colon or a row of dots.
"""

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Receipt items",
    "description": "Products bought and the amount charged for each line, in receipt order. Subtotal, tax, "
                   "tip, total and payment lines are not items.",
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1,
                             "description": "Product name as printed, without quantity markers."},
                    "price": {"type": "number", "minimum": 0,
                              "description": "Amount charged for the line, without currency."},
                },
                "required": ["name", "price"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}

# Product names per kind of shop, with a typical price range (in the shop's currency).
SHOPS = {
    "cafe": (["Coffee", "Bagel", "Green Tea", "Latte", "Cappuccino", "Croissant", "Blueberry Muffin",
              "Espresso", "Chai Latte", "Hot Chocolate", "Cinnamon Roll", "Iced Americano", "Scone",
              "Oat Milk Flat White", "Avocado Toast", "Orange Juice"], (1.5, 9.0)),
    "grocery": (["Bananas", "Milk 2%", "Whole Wheat Bread", "Eggs Dozen", "Cheddar Cheese", "Chicken Breast",
                 "Greek Yogurt", "Olive Oil", "Basmati Rice 1kg", "Tomatoes", "Spaghetti", "Peanut Butter",
                 "Apples Gala", "Ground Coffee", "Butter Unsalted", "Baby Spinach"], (0.8, 18.0)),
    "hardware": (["AA Batteries 4-pack", "Duct Tape", "Wood Screws", "Light Bulb LED", "Paint Brush 2in",
                  "Extension Cord", "Hammer", "Measuring Tape", "Work Gloves", "Sandpaper Set",
                  "Zip Ties 100ct", "WD-40"], (2.0, 45.0)),
    "pharmacy": (["Ibuprofen 200mg", "Toothpaste", "Shampoo", "Vitamin C", "Band-Aids", "Hand Sanitizer",
                  "Cough Drops", "Sunscreen SPF 50", "Dental Floss", "Allergy Relief"], (1.5, 25.0)),
    "books": (["Paperback Novel", "Notebook A5", "Gel Pens 3pk", "Bookmark", "Cookbook", "Wall Calendar",
               "Greeting Card", "Sticky Notes"], (1.0, 35.0)),
    "restaurant": (["Margherita Pizza", "Caesar Salad", "Cheeseburger", "French Fries", "Iced Tea",
                    "Pad Thai", "Garlic Bread", "Lemonade", "Tiramisu", "Fish Tacos", "Soup of the Day",
                    "Sparkling Water"], (2.5, 28.0)),
}
STORE_NAMES = {
    "cafe": ["Blue Door Cafe", "BEAN THERE", "Corner Coffee Co.", "Morning Grind"],
    "grocery": ["FreshMart", "GREEN VALLEY GROCERS", "Daily Foods #212", "Market Basket"],
    "hardware": ["Handy Hardware", "BOLT & NUT SUPPLY", "Fix-It Depot"],
    "pharmacy": ["CityCare Pharmacy", "WELLNESS RX", "Main St Drugs"],
    "books": ["Page Turner Books", "THE INK WELL", "Chapter One"],
    "restaurant": ["Luigi's Trattoria", "THE GREEN FORK", "Taco Loco", "Harbor Diner"],
}
STREETS = ["12 Main St", "450 Oak Ave", "7 Harbour Rd", "88 King Street", "1020 Elm Blvd"]
CURRENCIES = [  # (symbol or code, position, weight)
    ("$", "before", 5), ("USD", "after", 1), ("€", "after", 2), ("EUR", "before", 1), ("£", "before", 2),
    ("", "none", 3),
]


def money(rng: random.Random, low: float, high: float) -> float:
    cents = rng.randint(int(low * 100), int(high * 100))
    ending = rng.random()
    if ending < 0.2:  # round prices and .99 / .49 endings are common on real receipts
        cents = cents // 100 * 100
    elif ending < 0.35:
        cents = cents // 100 * 100 + rng.choice([99, 49, 50, 25])
    return round(max(cents, 10) / 100, 2)


class Style:
    """How one receipt is printed; every choice is drawn once per receipt so a receipt is self-consistent."""

    def __init__(self, rng: random.Random) -> None:
        self.symbol, self.position = rng.choices([(s, p) for s, p, _ in CURRENCIES],
                                                 weights=[w for *_, w in CURRENCIES])[0]
        # Decimal commas only with euros, and never in inline comma-separated lists where they would be ambiguous.
        self.decimal_comma = self.symbol in ("€", "EUR") and rng.random() < 0.5
        self.case = rng.choices(["as is", "upper", "lower", "title"], weights=[6, 2, 1, 1])[0]
        self.layout = rng.choices(
            ["inline", "lines", "tab", "pipe", "semicolon", "dots", "colon", "dash-lines"],
            weights=[4, 4, 2, 2, 2, 2, 1, 2])[0]
        if self.layout == "inline":
            self.decimal_comma = False
        self.inline_sep = rng.choice([" - ", " ", ": "])
        self.header = self.layout != "inline" and rng.random() < 0.6
        self.totals = rng.random() < (0.35 if self.layout == "inline" else 0.7)
        self.footer = self.layout != "inline" and rng.random() < 0.4
        self.quantity = rng.choice(["2x NAME", "NAME x2", "NAME (x2)", "2 @ UNIT NAME", "qty 2 NAME"])

    def price(self, value: float) -> str:
        text = f"{value:.2f}"
        if self.decimal_comma:
            text = text.replace(".", ",")
        if self.position == "before":
            return f"{self.symbol}{text}" if len(self.symbol) == 1 else f"{self.symbol} {text}"
        if self.position == "after":
            return f"{text} {self.symbol}"
        return text

    def name(self, name: str) -> str:
        return {"upper": name.upper(), "lower": name.lower(), "title": name.title()}.get(self.case, name)


def receipt(rng: random.Random) -> tuple[str, list[dict]]:
    """One receipt's text and the answer's items."""
    shop = rng.choice(list(SHOPS))
    names, (low, high) = SHOPS[shop]
    style = Style(rng)
    n_items = rng.choices([1, 2, 3, 4, 5, 6, 7], weights=[2, 4, 4, 3, 2, 1, 1])[0]
    chosen = rng.sample(names, min(n_items, len(names)))
    items: list[dict] = []
    lines: list[str] = []
    for raw in chosen:
        name = style.name(raw)
        qty = rng.choice([2, 2, 3, 4]) if rng.random() < 0.2 else 1
        unit = money(rng, low, high)
        amount = round(unit * qty, 2)
        label = name
        if qty > 1:
            pattern = style.quantity.replace("2", str(qty))
            label = pattern.replace("UNIT", style.price(unit)).replace("NAME", name)
        items.append({"name": name, "price": amount})
        lines.append(_line(style, label, style.price(amount)))

    if style.layout == "inline":
        joiner = "; " if rng.random() < 0.25 else ", "
        body = joiner.join(lines)
        if style.totals:
            total = round(sum(i["price"] for i in items), 2)
            body += f"{joiner}{rng.choice(['Total', 'TOTAL', 'total'])}{style.inline_sep}{style.price(total)}"
        return body, items

    out: list[str] = []
    if style.header:
        store = rng.choice(STORE_NAMES[shop])
        out.append(store)
        if rng.random() < 0.6:
            out.append(rng.choice(STREETS))
        day, month, hour = rng.randint(1, 28), rng.randint(1, 12), rng.randint(7, 21)
        out.append(rng.choice([f"2026-{month:02d}-{day:02d} {hour:02d}:{rng.randint(0, 59):02d}",
                               f"{month:02d}/{day:02d}/2026", f"Receipt #{rng.randint(1000, 99999)}",
                               f"Cashier: {rng.choice(['Ana', 'Ben', 'Chloe', 'Dev'])}"]
                              + ([f"Order {rng.randint(10, 999)}  Table {rng.randint(1, 30)}"]
                                 if shop in ("cafe", "restaurant") else [])))
        if rng.random() < 0.4:
            out.append(rng.choice(["-" * 24, "=" * 24, "*" * 16]))
    out.extend(lines)
    if style.totals:
        subtotal = round(sum(i["price"] for i in items), 2)
        rate = rng.choice([0.05, 0.07, 0.0825, 0.1, 0.2])
        tax = round(subtotal * rate, 2)
        total = round(subtotal + tax, 2)
        if rng.random() < 0.4:
            out.append(rng.choice(["-" * 24, "----"]))
        if rng.random() < 0.7:
            out.append(_line(style, rng.choice(["Subtotal", "SUBTOTAL", "Sub-total", "subtotal"]),
                             style.price(subtotal)))
        out.append(_line(style, rng.choice(["Tax", "TAX", f"Sales Tax {rate * 100:g}%", f"VAT {rate * 100:g}%"]),
                         style.price(tax)))
        if shop == "restaurant" and rng.random() < 0.5:
            tip = round(subtotal * 0.18, 2)
            total = round(total + tip, 2)
            out.append(_line(style, rng.choice(["Tip", "Gratuity 18%"]), style.price(tip)))
        out.append(_line(style, rng.choice(["Total", "TOTAL", "Total Due", "AMOUNT DUE", "Balance"]),
                         style.price(total)))
        if rng.random() < 0.3:
            paid = float(int(total) + rng.choice([1, 5, 10]))
            out.append(_line(style, rng.choice(["Cash", "CASH"]), style.price(paid)))
            out.append(_line(style, rng.choice(["Change", "CHANGE DUE"]), style.price(round(paid - total, 2))))
        elif rng.random() < 0.4:
            out.append(f"{rng.choice(['VISA', 'Mastercard', 'Card'])} ****{rng.randint(1000, 9999)}")
    if style.footer:
        out.append(rng.choice(["Thank you!", "THANK YOU FOR SHOPPING", "Have a nice day :)",
                               "Returns within 30 days with receipt"]))
    return "\n".join(out), items


def _line(style: Style, label: str, price: str) -> str:
    layout = style.layout
    if layout == "inline":
        return f"{label}{style.inline_sep}{price}"
    if layout == "tab":
        return f"{label}\t{price}"
    if layout == "pipe":
        return f"{label} | {price}"
    if layout == "semicolon":
        return f"{label};{price}"
    if layout == "dots":
        return f"{label} {'.' * max(3, 28 - len(label) - len(price))} {price}"
    if layout == "colon":
        return f"{label}: {price}"
    if layout == "dash-lines":
        return f"{label} - {price}"
    return f"{label}  {price}" if len(label) > 14 else f"{label:<16}{price}"


def answer(items: list[dict]) -> str:
    return json.dumps({"items": items}, ensure_ascii=False)


def example(system: str, text: str, items: list[dict]) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": text},
                         {"role": "assistant", "content": answer(items)}]}


def build() -> dict[str, str]:
    """Every file's name and exact text."""
    rng = random.Random(SEED)
    seen: set[str] = set()
    receipts: list[tuple[str, list[dict]]] = []
    # The guide's two examples open the training set, verbatim (with the nested JSON properly escaped).
    for text, items in [("Coffee - $4.50, Bagel - $3.00",
                         [{"name": "Coffee", "price": 4.5}, {"name": "Bagel", "price": 3.0}]),
                        ("Green Tea $2.75", [{"name": "Green Tea", "price": 2.75}])]:
        seen.add(text)
        receipts.append((text, items))
    while len(receipts) < N_TRAIN + N_TEST:
        text, items = receipt(rng)
        if text not in seen:  # no receipt text appears twice, so test never leaks into train
            seen.add(text)
            receipts.append((text, items))
    train, test = receipts[:N_TRAIN], receipts[N_TRAIN:]

    # Few-shot turns for the long prompt: drawn from their own stream, one per layout family, none in train/test.
    shot_rng = random.Random(SEED + 1)
    shots: list[tuple[str, list[dict]]] = []
    wanted = ["inline", "lines", "pipe", "dots"]
    while wanted:
        text, items = receipt(shot_rng)
        layout = _layout_of(text)
        if layout in wanted and text not in seen and len(items) >= 2:
            seen.add(text)
            wanted.remove(layout)
            shots.append((text, items))

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    return {
        "train.jsonl": jsonl([example(SHORT_PROMPT, t, i) for t, i in train]),
        "test.jsonl": jsonl([example(SHORT_PROMPT, t, i) for t, i in test]),
        "few_shot.jsonl": jsonl([{"messages": [{"role": "user", "content": t},
                                               {"role": "assistant", "content": answer(i)}]} for t, i in shots]),
        "schema.json": json.dumps(SCHEMA, indent=2, ensure_ascii=False) + "\n",
        "system_prompt_long.txt": LONG_PROMPT,
        "system_prompt_short.txt": SHORT_PROMPT + "\n",
    }


def _layout_of(text: str) -> str:
    if "\n" not in text:
        return "inline"
    if " | " in text:
        return "pipe"
    if "..." in text:
        return "dots"
    if "\t" in text or ";" in text:
        return "other"
    return "lines"


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
