"""Graders in OpenAI's shapes: ``string_check``, ``text_similarity``, ``score_model``, ``label_model``,
``python`` and ``multi``, with OpenAI's ``{{ item.* }}`` / ``{{ sample.output_text }}`` templates.

    from tunewise.eval.graders import load_graders, grade, GradingContext, ModelJudge

    graders = load_graders("graders.yaml")                 # one grader, a list, or graders: {...}
    with ModelJudge(base_url="http://127.0.0.1:8000/v1", api_key=KEY) as judge:
        ctx = GradingContext(judge=judge)                  # model graders ask it; answers are cached
        result = grade(graders[0], sample=answer_text, item=row, context=ctx)
        result.reward, result.passed, result.to_openai()   # OpenAI's RunGraderResponse

Pairwise judgements (both orders, disagreement is a tie): ``pairwise_grader``, ``compare``, ``position_bias``.
A judge's agreement with a deterministic grader on the same rows: ``agreement``.
"""

from tunewise.eval.graders.agreement import agreement
from tunewise.eval.graders.judge import Embedder, JudgeCallError, ModelJudge
from tunewise.eval.graders.pairwise import (
    PairwiseResult,
    compare,
    pairwise_grader,
    parse_pairwise,
    position_bias,
)
from tunewise.eval.graders.run import ERROR_FLAGS, GraderResult, GradingContext, grade, grade_all
from tunewise.eval.graders.similarity import METRICS, meteor_synonyms
from tunewise.eval.graders.spec import TYPES, Grader, GraderError, load_graders, parse_grader, parse_graders
from tunewise.eval.graders.templates import Sample, TemplateError, render

__all__ = [
    "ERROR_FLAGS", "METRICS", "TYPES", "Embedder", "Grader", "GraderError", "GraderResult", "GradingContext",
    "JudgeCallError", "ModelJudge", "PairwiseResult", "Sample", "TemplateError", "agreement", "compare", "grade", "grade_all",
    "load_graders", "meteor_synonyms", "pairwise_grader", "parse_grader", "parse_graders", "parse_pairwise",
    "position_bias", "render",
]
