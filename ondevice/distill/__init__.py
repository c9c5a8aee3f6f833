"""Knowledge distillation for any student/teacher pair of classifiers: Hinton KD, feature hints read through
forward hooks, and a LightningModule that trains the student against a frozen teacher.

- `ondevice.distill.losses`: `kd_loss`, `hybrid_loss`, `DistillationLoss` (every term by name).
- `ondevice.distill.hints`: `FeatureHint`, `FeatureRecorder` and the adapters that match feature widths.
- `ondevice.distill.module`: `DistillationModule`, the teacher-logit cache.
- `ondevice.distill.checkpoints`: `load_weights` (any network from a state_dict or Lightning checkpoint) and
  `student_state_dict`.
"""

from ondevice.distill.checkpoints import load_weights, student_state_dict
from ondevice.distill.hints import (
    LAYOUTS,
    FeatureHint,
    FeatureRecorder,
    align_feature,
    find_modules,
    hint_loss,
    make_adapter,
)
from ondevice.distill.losses import DISTILL_ON, DistillationLoss, DistillOn, classification_ce, hybrid_loss, kd_loss
from ondevice.distill.module import DistillationModule, row_digests, split_batch

__all__ = [
    "DISTILL_ON",
    "LAYOUTS",
    "DistillOn",
    "DistillationLoss",
    "DistillationModule",
    "FeatureHint",
    "FeatureRecorder",
    "align_feature",
    "classification_ce",
    "find_modules",
    "hint_loss",
    "hybrid_loss",
    "kd_loss",
    "load_weights",
    "make_adapter",
    "row_digests",
    "split_batch",
    "student_state_dict",
]
