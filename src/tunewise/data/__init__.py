"""Chat fine-tuning data: reading JSONL safely, OpenAI's rules, findings, repair and token statistics.

    from tunewise.data import validate
    report = validate("train.jsonl", model="gpt-4o-mini")
    report.raise_for_errors()          # DataError naming the first bad lines
    report.stats.billed_tokens_per_epoch
"""

from tunewise.data.reading import iter_examples, repair
from tunewise.data.report import CODES, ERROR, WARNING, Finding, Report, Stats, Summary
from tunewise.data.validate import DEFAULT_MODEL, validate
from tunewise.errors import DataError

__all__ = ["CODES", "DEFAULT_MODEL", "ERROR", "WARNING", "DataError", "Finding", "Report", "Stats", "Summary",
           "iter_examples", "repair", "validate"]
