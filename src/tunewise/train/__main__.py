"""``python -m tunewise.train ARGS``: ``tunewise train ARGS``, the entry point that ``torchrun`` and
``accelerate launch`` start once per process (``torchrun --nproc-per-node N -m tunewise.train data.jsonl ...``)."""

import sys

from tunewise.cli import main

main(["train", *sys.argv[1:]])
