"""``text_similarity`` metrics, each from the library that defines it (no hand-written copies).

==============  =========================================================================================
metric          computed as
==============  =========================================================================================
fuzzy_match     ``rapidfuzz.fuzz.ratio(input, reference) / 100`` (normalised Indel similarity)
bleu            ``sacrebleu.sentence_bleu(input, [reference]).score / 100`` (13a tokens, exp smoothing)
gleu            ``nltk.translate.gleu_score.sentence_gleu`` (Google BLEU) on sacrebleu's 13a tokens
meteor          ``nltk.translate.meteor_score.meteor_score`` on 13a tokens, lower-cased; exact and Porter-stem
                matches always, WordNet synonyms only where nltk's WordNet data is installed (see below)
rouge_1..5, l   ``rouge_score.rouge_scorer.RougeScorer([rougeN | rougeL]).score(reference, input)`` F-measure
cosine          cosine of the two texts' embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint
==============  =========================================================================================

Two empty texts score 1.0 and one empty text 0.0 under every metric (the libraries disagree on empty input).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

METRICS = ("cosine", "fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4",
           "rouge_5", "rouge_l")


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Callable[[str], str]:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def tokens(text: str) -> list[str]:
    """sacrebleu's 13a tokenisation (the one BLEU uses), as a list."""
    return _tokenizer()(text).split()


def fuzzy_match(a: str, b: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(a, b) / 100.0


def bleu(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(hypothesis, [reference]).score / 100.0


def gleu(hypothesis: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([tokens(reference)], tokens(hypothesis)))


class _NoWordNet:
    """Stands in for nltk's WordNet reader when its data is not installed: no synonyms, so METEOR matches
    exact words and Porter stems only."""

    def synsets(self, *args: Any, **kwargs: Any) -> list:
        return []


@functools.lru_cache(maxsize=1)
def wordnet() -> Any:
    """nltk's WordNet reader when its data is installed (``nltk.download('wordnet')``), else no synonyms."""
    try:
        from nltk.corpus import wordnet as wn

        wn.ensure_loaded()
        return wn
    except (LookupError, OSError):
        return _NoWordNet()


def meteor_synonyms() -> bool:
    """Whether METEOR matches WordNet synonyms here (False without nltk's WordNet data)."""
    return not isinstance(wordnet(), _NoWordNet)


def meteor(hypothesis: str, reference: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([tokens(reference)], tokens(hypothesis), wordnet=wordnet()))


@functools.lru_cache(maxsize=8)
def _rouge(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=False)


def rouge(kind: str, hypothesis: str, reference: str) -> float:
    """``kind`` is ``rouge1``..``rouge5`` or ``rougeL``; the F-measure."""
    return float(_rouge(kind).score(reference, hypothesis)[kind].fmeasure)


def cosine_of(u: list[float], v: list[float]) -> float:
    import numpy as np

    a, b = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm else 0.0


def score(metric: str, hypothesis: str, reference: str, embed: Callable[[list[str]], list[list[float]]] | None
          = None) -> float:
    """``metric`` of ``hypothesis`` (the graded text) against ``reference``, in [0, 1] (cosine in [-1, 1])."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}' (one of {', '.join(METRICS)})")
    if not hypothesis.strip() or not reference.strip():
        return 1.0 if not hypothesis.strip() and not reference.strip() else 0.0
    if metric == "fuzzy_match":
        return fuzzy_match(hypothesis, reference)
    if metric == "bleu":
        return bleu(hypothesis, reference)
    if metric == "gleu":
        return gleu(hypothesis, reference)
    if metric == "meteor":
        return meteor(hypothesis, reference)
    if metric == "cosine":
        if embed is None:
            raise ValueError("cosine needs an embeddings endpoint")
        u, v = embed([hypothesis, reference])
        return cosine_of(u, v)
    kind = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
    return rouge(kind, hypothesis, reference)
