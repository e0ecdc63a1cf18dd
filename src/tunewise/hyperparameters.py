"""OpenAI's fine-tuning hyperparameters and the values a job accepts, in one place for the client and the server.

Imports nothing heavy, so the client commands can check a job's settings before they upload anything.
"""

from __future__ import annotations

from typing import Any

from tunewise.errors import UsageError

HYPERPARAMETER_RANGES: dict[str, tuple[float, float, type]] = {
    "n_epochs": (1, 25, int), "batch_size": (1, 256, int), "learning_rate_multiplier": (0, 100, float)}
"""name -> (low, high, kind): integers in [low, high], multipliers in (low, high]."""
DPO_RANGES: dict[str, tuple[float, float, type]] = {**HYPERPARAMETER_RANGES, "beta": (0, 2, float)}
"""DPO's hyperparameters: the supervised ones and ``beta``, in (0, 2] (OpenAI's range)."""
REINFORCEMENT_RANGES: dict[str, tuple[float, float, type]] = {
    **HYPERPARAMETER_RANGES, "compute_multiplier": (0, 10, float), "eval_interval": (1, 10**9, int),
    "eval_samples": (1, 64, int)}
"""Reinforcement fine-tuning's numeric hyperparameters (OpenAI's FineTuneReinforcementHyperparameters; the local
trainer caps ``eval_samples`` at 64); ``reasoning_effort`` is a choice of ``REASONING_EFFORTS``."""
REASONING_EFFORTS = ("default", "low", "medium", "high")
"""OpenAI's ``reasoning_effort`` of a reinforcement job."""


def check_hyperparameter(name: str, value: Any, ranges: dict[str, tuple[float, float, type]] | None = None
                         ) -> int | float | str:
    """``value`` checked against ``ranges`` (default ``HYPERPARAMETER_RANGES``; ``DPO_RANGES`` for DPO,
    ``REINFORCEMENT_RANGES`` for reinforcement; 'auto' and None pass as 'auto'); raises ``UsageError``."""
    ranges = HYPERPARAMETER_RANGES if ranges is None else ranges
    if name not in ranges:
        raise UsageError(f"Unknown hyperparameter {name!r}.", param=f"hyperparameters.{name}",
                         hint=_method_name(ranges) + " takes " + ", ".join(ranges)
                         + (", reasoning_effort" if "compute_multiplier" in ranges else "") + ".")
    low, high, kind = ranges[name]
    if value == "auto" or value is None:
        return "auto"
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and kind is int:
        ok = float(value).is_integer() and low <= value <= high
    elif ok:
        ok = low < value <= high
    if not ok:
        limits = f"an integer from {low:g} to {high:g}" if kind is int else f"a number in ({low:g}, {high:g}]"
        raise UsageError(f"Invalid {name} {value!r}: expected 'auto' or {limits}.", param=f"hyperparameters.{name}")
    return int(value) if kind is int else float(value)


def _method_name(ranges: dict[str, tuple[float, float, type]]) -> str:
    if "beta" in ranges:
        return "DPO"
    return "Reinforcement fine-tuning" if "compute_multiplier" in ranges else "Supervised fine-tuning"
