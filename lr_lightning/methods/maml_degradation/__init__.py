"""Paper A: degradation meta-learning classifier (MAML where a task is a degradation)."""

from lr_lightning.methods.maml_degradation.adaptation import (
    AdaptationResult,
    adapt_and_evaluate,
    adapt_classifier,
    evaluate_classifier,
    sample_support,
)
from lr_lightning.methods.maml_degradation.module import MAMLDegradationClassifier, split_tasks
from lr_lightning.methods.maml_degradation.sr_scheme import SRThenCNN

__all__ = [
    "AdaptationResult",
    "MAMLDegradationClassifier",
    "SRThenCNN",
    "adapt_and_evaluate",
    "adapt_classifier",
    "evaluate_classifier",
    "sample_support",
    "split_tasks",
]
