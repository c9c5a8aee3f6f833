"""The distillation objectives: Hinton KD, cross-entropy, their hybrid, and `DistillationLoss`, which adds the
feature-hint terms and reports every term by name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

from ondevice.distill.hints import FeatureHint, hint_loss

DistillOn = Literal["all", "teacher_correct"]
DISTILL_ON: tuple[str, ...] = get_args(DistillOn)


def flat_logits(logits: Tensor, what: str) -> Tensor:
    """Logits [B, C] or [B, ..., C] as [N, C]; ``what`` names them in the error for any other shape."""
    # Sequence logits [B, L, C] (language models) count every position as one example of the batch mean.
    if logits.ndim < 2:
        raise ValueError(f"{what}: expected logits [B, C] or [B, ..., C], got shape {tuple(logits.shape)}")
    return logits.reshape(-1, logits.shape[-1])


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_alpha(alpha: float) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the weight of the KD term) must lie in [0, 1], got {alpha}")


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch (every position for [B, ..., C] logits),
    or per row of the flattened logits with ``reduction="none"``.

    The T² factor (Hinton et al. 2015) keeps the gradient magnitude comparable across temperatures, since the
    softened gradient shrinks as 1/T²; for large T the gradient tends to ((s - mean s) - (t - mean t)) / (C·B).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"kd_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    log_p_s = F.log_softmax(flat_logits(student_logits, "student logits") / temperature, dim=-1)
    log_p_t = F.log_softmax(flat_logits(teacher_logits, "teacher logits") / temperature, dim=-1)
    # log_target=True: the teacher stays in log space, so tiny probabilities never turn into 0 · log 0.
    if reduction == "none":
        return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1) * temperature**2
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def classification_ce(
    logits: Tensor, target: Tensor, label_smoothing: float = 0.0, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """Cross-entropy of logits [B, C] (or [B, ..., C]) against class indices [B] (or [B, ...]), optionally with
    ``label_smoothing`` ε (the target puts 1 − ε on the label and ε/C on every class); the batch mean, or one
    value per row of the flattened logits with ``reduction="none"``."""
    flat = flat_logits(logits, "student logits")
    if target.numel() != flat.shape[0]:
        raise ValueError(
            f"targets: expected {flat.shape[0]} class indices for logits {tuple(logits.shape)}, "
            f"got shape {tuple(target.shape)}"
        )
    return F.cross_entropy(flat, target.reshape(-1), label_smoothing=label_smoothing, reduction=reduction)


def _with_hints(total: Tensor, hint_terms: Iterable[tuple[float, Tensor]]) -> Tensor:
    for weight, value in hint_terms:
        total = total + weight * value
    return total


def _combine(ce: Tensor, kd: Tensor, alpha: float, hint_terms: Iterable[tuple[float, Tensor]]) -> Tensor:
    # At alpha = 0 the total is the CE tensor itself: bitwise CE, and immune to a NaN/inf KD term.
    return _with_hints(ce if alpha == 0 else (1 - alpha) * ce + alpha * kd, hint_terms)


def hybrid_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float = 0.9,
    temperature: float = 4.0,
    hint_terms: Sequence[tuple[float, Tensor]] = (),
) -> Tensor:
    """``(1 - alpha) · CE(student, target) + alpha · KD + Σ wᵢ · hintᵢ``; ``hint_terms`` holds (wᵢ, hintᵢ) pairs."""
    _check_alpha(alpha)
    ce = classification_ce(student_logits, target)
    return _combine(ce, kd_loss(student_logits, teacher_logits, temperature), alpha, hint_terms)


class DistillationLoss(nn.Module):
    """The hybrid objective ``(1 - alpha) · CE + alpha · KD(T) + Σ wᵢ · hintᵢ`` with every term reported by name.

    Holds no parameters: the hint adapters belong to the caller (see :class:`DistillationModule`).

    Args:
        alpha: weight of the KD term, in [0, 1]; 0 gives plain cross-entropy.
        temperature: softmax temperature of the KD term, > 0.
        hints: feature hints (:class:`FeatureHint`, or dicts of its fields).
        label_smoothing: ε of the CE term's smoothed targets, in [0, 1); 0 is plain CE.
        distill_on: which examples the KD term applies to. ``all`` (the default): every one. ``teacher_correct``:
            only those whose label is the teacher's top class; the others are trained on the CE term alone (weight
            1), so a teacher's systematic errors are not taught. Each example's loss is then
            ``(1 - alpha·m) · CE + alpha·m · KD`` with m = 1 where the teacher is right and 0 elsewhere, averaged
            over the batch; the reported ``kd`` is the mean over the distilled examples and ``distilled`` their
            fraction.
    """

    def __init__(
        self,
        alpha: float = 0.9,
        temperature: float = 4.0,
        hints: list[FeatureHint] | None = None,
        label_smoothing: float = 0.0,
        distill_on: DistillOn = "all",
    ) -> None:
        super().__init__()
        _check_alpha(alpha)
        _check_temperature(temperature)
        if distill_on not in DISTILL_ON:
            raise ValueError(f"distill_on must be one of {DISTILL_ON}, got {distill_on!r}")
        self.distill_on = distill_on
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.hints = [hint if isinstance(hint, FeatureHint) else FeatureHint(**hint) for hint in hints or []]
        keys = [hint.key for hint in self.hints]
        if len(set(keys)) != len(keys):
            raise ValueError(
                "DistillationLoss: hints must pair distinct (student, teacher) modules, "
                f"got {[h.name for h in self.hints]}"
            )

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        target: Tensor,
        student_features: Mapping[str, Tensor] | None = None,
        teacher_features: Mapping[str, Tensor] | None = None,
        adapters: Mapping[str, nn.Module] | None = None,
    ) -> dict[str, Tensor]:
        """``{"ce", "kd", "hint/<student>-><teacher>" (one per hint), "total"}``.

        ``student_features``/``teacher_features`` map module names to recorded outputs, ``adapters`` maps
        :attr:`FeatureHint.key` to the adapter; all three are needed only when there are hints.
        """
        if self.distill_on == "teacher_correct":
            terms, loss = self._teacher_correct_terms(student_logits, teacher_logits.detach(), target)
        else:
            terms = {
                "ce": classification_ce(student_logits, target, self.label_smoothing),
                "kd": kd_loss(student_logits, teacher_logits.detach(), self.temperature),
            }
            loss = _combine(terms["ce"], terms["kd"], self.alpha, ())
        hint_terms = []
        for hint in self.hints:
            for what, given, key in (
                ("student_features", student_features, hint.student),
                ("teacher_features", teacher_features, hint.teacher),
                ("adapters", adapters, hint.key),
            ):
                if given is None or key not in given:
                    raise ValueError(f"DistillationLoss: hint {hint.name} needs {what}[{key!r}], which was not given")
            value = hint_loss(hint, adapters[hint.key], student_features[hint.student], teacher_features[hint.teacher])
            terms[f"hint/{hint.name}"] = value
            hint_terms.append((hint.weight, value))
        terms["total"] = _with_hints(loss, hint_terms)
        return terms

    def _teacher_correct_terms(
        self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The reported terms with KD only where the teacher's top class is the label (``distill_on``), and the
        batch mean of each example's mix of CE and KD (the loss before hints)."""
        ce = classification_ce(student_logits, target, self.label_smoothing, reduction="none")
        kd = kd_loss(student_logits, teacher_logits, self.temperature, reduction="none")
        right = (flat_logits(teacher_logits, "teacher logits").argmax(-1) == target.reshape(-1)).to(ce.dtype)
        weight = self.alpha * right
        count = right.sum()
        terms = {"ce": ce.mean(), "kd": (kd * right).sum() / count.clamp(min=1), "distilled": count / right.numel()}
        return terms, ((1 - weight) * ce + weight * kd).mean()
