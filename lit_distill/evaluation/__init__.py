"""Evaluation of synthetic sets: fresh networks trained on them, measured on real test images."""

from lit_distill.evaluation.callback import EvaluationCallback
from lit_distill.evaluation.comparison import ComparisonModule
from lit_distill.evaluation.evaluator import (
    EvalResult,
    SyntheticEvaluator,
    TrainedRun,
    format_results,
)
from lit_distill.evaluation.module import EvaluationModule
from lit_distill.evaluation.protocols import (
    DEFAULT_LR,
    PROTOCOLS,
    EvalProtocol,
    resolve_protocol,
)
from lit_distill.evaluation.search import NASModule
from lit_distill.evaluation.train import accuracy, train_on_synthetic

__all__ = [
    "ComparisonModule",
    "DEFAULT_LR",
    "PROTOCOLS",
    "EvalProtocol",
    "EvalResult",
    "EvaluationCallback",
    "EvaluationModule",
    "NASModule",
    "SyntheticEvaluator",
    "TrainedRun",
    "accuracy",
    "format_results",
    "resolve_protocol",
    "train_on_synthetic",
]
