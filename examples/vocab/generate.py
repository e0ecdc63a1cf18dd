"""Write the domain-vocabulary example data set: lay descriptions of boiler faults mapped to a fixed code list.

    python examples/vocab/generate.py            # rewrites the files beside this script
    python examples/vocab/generate.py --out DIR  # writes them somewhere else

Deterministic (fixed seed): running it again gives byte-identical files, and a test checks that the committed
files are exactly what it writes. The task is the guide's "domain-specific vocabulary" case: a householder
describes what their boiler does in everyday words, and the answer is the one entry of a fictional heating
engineer's fault-code list (``CODES``: Ashby & Vale's twelve codes, each a code and its technical term) that
names it, e.g. "the little flame goes out as soon as I let go of the button" -> ``AV-101 thermocouple failure``.
No base model knows these codes; the question is whether the prompt (the whole list, spelt out) or a small
fine-tuned data set teaches them better.

Files:

- ``train.jsonl`` (180 examples) and ``test.jsonl`` (40): one description each, with the short system prompt
  the fine-tuned model is called with; the answer is ``CODE term`` exactly. No description appears twice.
- ``system_prompt_short.txt``: one line; ``system_prompt_long.txt``: the whole code list with what each fault
  looks like, for the base model.
- ``few_shot.jsonl``: four description/answer turns (not in either split).
- ``graders.yaml``: ``term`` (python: the answer names the reference's technical term, the vocabulary itself:
  the decision's primary measure), ``fault_code`` (python: the answer's first fault code is the reference's),
  ``exact`` (python: the whole answer is the entry, code and term, ignoring case, spacing and a final full stop)
  and ``judge`` (a ``label_model`` judge asked through the local server whether the answer names the same fault;
  its answers are cached, and its agreement with ``term`` is reported).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20241212
N_TRAIN = 180
N_TEST = 40
N_FEW_SHOT = 4
JUDGE_MODEL = "smollm2-135m-instruct"
COMPANY = "Ashby & Vale"

# The fixed vocabulary: code, technical term, what it looks like (for the long prompt), and lay descriptions.
CODES = [
    ("AV-101", "thermocouple failure", "the pilot flame will not stay lit once the button is released",
     ["the little flame goes out as soon as I let go of the button",
      "the pilot light won't stay on, it dies after a few seconds",
      "I can light the pilot but it goes straight out again"]),
    ("AV-102", "ignition electrode fault", "the boiler clicks repeatedly but never lights",
     ["it keeps clicking and clicking but never fires up",
      "there's a ticking noise when the heating comes on and then nothing lights",
      "I hear a sparking click over and over but no flame"]),
    ("AV-203", "low system pressure", "the pressure gauge reads below 1 bar and the boiler locks out",
     ["the needle on the little dial is right down near zero",
      "I keep having to top it up with the silver tap under the boiler",
      "the pressure dial on the front has dropped into the red"]),
    ("AV-204", "pressure relief valve leak", "water drips from the overflow pipe outside",
     ["there's water dripping from a small copper pipe sticking out of the outside wall",
      "a pipe outside is constantly dribbling water onto the patio",
      "the little pipe that comes out through the wall is always wet and dripping"]),
    ("AV-305", "diverter valve failure", "the radiators heat but the taps run cold, or the other way round",
     ["the radiators get hot but the taps only give cold water",
      "we have hot water but the radiators stay cold whatever I set",
      "when I run the hot tap the radiators go hot instead"]),
    ("AV-306", "circulation pump seizure", "the boiler fires but the radiators stay cold and it hums",
     ["the boiler is on and humming but every radiator stays stone cold",
      "it makes a low humming noise and the heat never reaches the rooms",
      "the boiler gets really hot itself but nothing else warms up"]),
    ("AV-407", "heat exchanger kettling", "a rumbling like a kettle on the boil from limescale",
     ["it makes a noise like a kettle boiling when the heating is on",
      "there's a loud rumbling and bubbling sound from inside the boiler",
      "it sounds like something is boiling away inside the casing"]),
    ("AV-408", "radiator airlock", "radiators hot at the bottom and cold at the top, with gurgling",
     ["the radiators are warm at the bottom but cold along the top",
      "I can hear gurgling in the radiators and the tops stay cold",
      "only the lower half of the radiator in the lounge heats up"]),
    ("AV-509", "frozen condensate pipe", "the boiler stops in frost; the white plastic pipe outside is frozen",
     ["it stopped working in the cold snap and the plastic pipe outside is iced up",
      "every time it freezes overnight the boiler cuts out with a gurgle",
      "the white plastic pipe that runs down the outside wall has ice in it and the boiler stopped"]),
    ("AV-510", "flue blockage", "fumes smell near the boiler or the flue outlet is blocked",
     ["there's a smell of fumes in the kitchen when the boiler runs",
      "I think birds have built a nest in the chimney bit on the roof",
      "the outlet on the outside wall looks blocked with leaves and it smells"]),
    ("AV-611", "room thermostat fault", "the heating ignores the set temperature",
     ["the heating comes on even when the wall dial is turned right down",
      "it never switches off however warm the house gets",
      "the control on the hall wall doesn't seem to make any difference"]),
    ("AV-612", "printed circuit board fault", "the display goes blank or shows random symbols",
     ["the little screen on the front has gone blank and nothing responds",
      "the display is showing strange symbols and flickering",
      "all the lights on the front panel flash at once and it won't start"]),
]

SHORT_PROMPT = f"You give the {COMPANY} fault code for a customer's description of their boiler."

OPENERS = ["", "Hi, ", "Hello, ", "Quick question: ", "Not sure who to ask, but ", "Morning, ", "Help please, "]
SUBJECTS = ["", "Our boiler: ", "My combi boiler: ", "The boiler at my flat: ", "Boiler problem - "]
CONTEXTS = ["", " It started yesterday.", " It's been like this since the weekend.",
            " The boiler is about ten years old.", " It only happens in the mornings.",
            " We moved in last month.", " It's a combi in the kitchen cupboard.",
            " My landlord said to ask you.", " It happened once before last winter."]


def long_prompt() -> str:
    lines = "\n".join(f"{code} {term}: {looks}" for code, term, looks, _ in CODES)
    return (f"You work for {COMPANY}, a heating engineer. A customer describes a problem with their boiler in "
            "everyday words. Answer with the one entry of the fault-code list below that names it: the code, a "
            "space, and the term, exactly as written, and nothing else.\n\n"
            f"Fault codes\n{lines}\n\n"
            "Example: \"the pilot light won't stay on\" -> AV-101 thermocouple failure\n")


def make(rng: random.Random, seen: set[str]) -> tuple[str, str]:
    """One (description, answer) pair not seen before."""
    while True:
        code, term, _, says = rng.choice(CODES)
        opener, subject = rng.choice(OPENERS), rng.choice(SUBJECTS)
        if opener and subject:
            subject = subject[0].lower() + subject[1:]
        text = f"{opener}{subject}{rng.choice(says)}.{rng.choice(CONTEXTS)}"
        text = text[0].upper() + text[1:]
        if text in seen:
            continue
        seen.add(text)
        return text, f"{code} {term}"


def example(system: str | None, message: str, answer: str) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]}


TERM_SOURCE = f"""\
import re

TERMS = {sorted(term for _, term, *_ in CODES)!r}


def grade(sample, item):
    term = re.sub(r"^AV-\\d{{3}}\\s+", "", item["reference"].strip()).casefold()
    answer = " ".join(sample["output_text"].split()).casefold()
    # The right term, and no other term of the list (reciting the list is not an answer).
    others = [t for t in TERMS if t != term and t in answer]
    return 1.0 if term and term in answer and not others else 0.0
"""

CODE_SOURCE = """\
import re

CODE = re.compile(r"\\bAV-\\d{3}\\b")


def grade(sample, item):
    found = CODE.findall(sample["output_text"].upper())
    expected = CODE.findall(item["reference"])
    return 1.0 if found and expected and found[0] == expected[0] else 0.0
"""

EXACT_SOURCE = """\
def grade(sample, item):
    def norm(text):
        return " ".join(text.strip().rstrip(".").split()).casefold()

    return 1.0 if norm(sample["output_text"]) == norm(item["reference"]) else 0.0
"""


def graders_yaml() -> str:
    import textwrap

    def block(source: str) -> str:
        return textwrap.indent(source, " " * 6)

    return f"""\
# The vocabulary task's graders: `tunewise eval TEST --grader graders.yaml`, and the decision's primary measure
# with `tunewise decide EVAL --primary term --claim vocabulary`. Written by generate.py.
graders:
  # The answer names the reference's technical term, the vocabulary itself (the decision's primary measure).
  - type: python
    name: term
    source: |
{block(TERM_SOURCE)}
  # The answer's first fault code is the reference's.
  - type: python
    name: fault_code
    source: |
{block(CODE_SOURCE)}
  # The whole answer is the list's entry, ignoring case, spacing and a final full stop.
  - type: python
    name: exact
    source: |
{block(EXACT_SOURCE)}
  # A model judge, asked through the local server (or --judge-base-url); its answers are cached.
  - type: label_model
    name: judge
    model: {JUDGE_MODEL}
    input:
      - role: system
        content: >-
          You check a heating engineer's fault codes. Say "same" if the answer gives the same fault code and
          fault as the correct entry, and "different" otherwise.
      - role: user
        content: "Correct entry: {{{{ item.reference }}}}\\nAnswer: {{{{ sample.output_text }}}}"
    labels: [same, different]
    passing_labels: [same]
"""


def build() -> dict[str, str]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    train = [example(SHORT_PROMPT, *make(rng, seen)) for _ in range(N_TRAIN)]
    test = [example(SHORT_PROMPT, *make(rng, seen)) for _ in range(N_TEST)]
    few_shot = [example(None, *make(rng, seen)) for _ in range(N_FEW_SHOT)]

    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    return {"train.jsonl": jsonl(train), "test.jsonl": jsonl(test), "few_shot.jsonl": jsonl(few_shot),
            "system_prompt_short.txt": SHORT_PROMPT + "\n", "system_prompt_long.txt": long_prompt(),
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
