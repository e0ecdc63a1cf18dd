"""The proof of reinforcement fine-tuning on the receipts task (slow: minutes on CPU): a weak supervised start on
the default model, GRPO with a grader rewarding exactly right, schema-valid answers, held-out exact match before
and after (``examples/receipts/rft.py``, smaller here).

    TUNEWISE_SLOW=1 pytest -q -s tests/test_grpo_slow.py     # prints the figures
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RECEIPTS = Path(__file__).resolve().parents[1] / "examples" / "receipts"


def load_script():
    spec = importlib.util.spec_from_file_location("receipts_rft", RECEIPTS / "rft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_grpo_raises_the_receipts_reward(tmp_path):
    rft = load_script()
    figures = rft.proof(tmp_path, n_rft=24, n_valid=4, n_test=20, sft_steps=8, batch_size=4,
                        max_completion_tokens=96)
    print(json.dumps(figures, indent=2))
    reward = figures["reward_per_step"]
    assert len(reward) == 6
    # The reward rises over the run: the last half's mean above the first half's.
    assert sum(reward[3:]) / 3 > sum(reward[:3]) / 3, reward
    before, after = (int(figures[k].split("/")[0]) for k in ("exact_match_before", "exact_match_after"))
    assert after >= before, figures
