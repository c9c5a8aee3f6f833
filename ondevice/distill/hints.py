"""Feature hints (FitNets-style): name a student and a teacher submodule, record their outputs through forward
hooks, and match them through a learned adapter."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYOUTS = ("channels_first", "channels_last")


@dataclass
class FeatureHint:
    """Match the output of student submodule ``student`` to teacher submodule ``teacher`` (FitNets-style).

    Names are dotted as in ``model.named_modules()``. A layout is ``channels_first`` ([B, C, ...], as convolutions
    produce) or ``channels_last`` ([B, ..., C], as transformers produce [B, L, D]); 2-D features [B, C] need none.
    A learned adapter maps the student's width to the teacher's and the student's length/size is resampled to
    the teacher's; the hint loss is the MSE to the (detached) teacher feature, scaled by ``weight``.
    """

    student: str
    teacher: str
    weight: float = 1.0
    student_layout: str = "channels_first"
    teacher_layout: str = "channels_first"

    def __post_init__(self) -> None:
        for field_name in ("student_layout", "teacher_layout"):
            if getattr(self, field_name) not in LAYOUTS:
                raise ValueError(
                    f"FeatureHint.{field_name}: expected one of {LAYOUTS}, got {getattr(self, field_name)!r}"
                )
        if not self.weight >= 0:
            raise ValueError(f"FeatureHint.weight must be >= 0, got {self.weight}")

    @property
    def name(self) -> str:
        """``"<student>-><teacher>"``, the name of the hint's loss term."""
        return f"{self.student}->{self.teacher}"

    @property
    def key(self) -> str:
        """The adapter's key in a ``nn.ModuleDict`` (which forbids dots)."""
        return f"{self.student}__to__{self.teacher}".replace(".", "_")


def find_modules(model: nn.Module, names: Iterable[str], role: str = "model") -> dict[str, nn.Module]:
    """The submodules of ``model`` with the given dotted names; a ValueError names any that do not exist."""
    available = dict(model.named_modules())
    found = {}
    for name in names:
        if name not in available:
            listed = [n for n in available if n]
            close = difflib.get_close_matches(name, listed, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"{role} {type(model).__name__} has no submodule named {name!r}{hint} "
                f"(some of its {len(listed)} submodules: {', '.join(map(repr, listed[:8]))})"
            )
        found[name] = available[name]
    return found


class FeatureRecorder:
    """Records the outputs of named submodules through forward hooks, leaving the model itself untouched.

    Use it as a context manager (or call :meth:`remove`) so the hooks go away; each recorder keeps its own
    ``features`` dict, so recorders never see each other's tensors.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], role: str = "model") -> None:
        self.role = role
        self.features: dict[str, Tensor] = {}
        modules = find_modules(model, dict.fromkeys(names), role)
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            # nn.MultiheadAttention returns (out, weights), nn.LSTM (out, (h, c)): the feature is the first.
            if isinstance(output, (tuple, list)) and output:
                output = output[0]
            if not isinstance(output, Tensor):
                raise TypeError(f"{self.role} submodule {name!r} returned {type(output).__name__}, expected a Tensor")
            if name in self.features:
                # A shared module (an activation reused in several places) would silently give the last call.
                raise RuntimeError(
                    f"{self.role} submodule {name!r} ran more than once in one forward pass; hook a module "
                    "that runs once"
                )
            self.features[name] = output

        return hook

    def remove(self) -> None:
        """Remove every hook this recorder registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> FeatureRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def get(self, name: str) -> Tensor:
        """The recorded output of ``name``; a clear error when that module did not run."""
        if name not in self.features:
            raise RuntimeError(f"{self.role} submodule {name!r} did not run during the forward pass")
        return self.features[name]


def _channels_first(feature: Tensor, layout: str, what: str) -> Tensor:
    if feature.ndim not in (2, 3, 4):
        raise ValueError(f"{what}: expected a 2-D, 3-D or 4-D feature, got shape {tuple(feature.shape)}")
    return feature.movedim(-1, 1) if layout == "channels_last" and feature.ndim > 2 else feature


def adapter_layer(ndim: int, in_width: int, out_width: int) -> nn.Module:
    """A fresh adapter for ``ndim``-D channels-first features: nn.Linear for 2-D, a 1×1 Conv1d/Conv2d for 3-D/4-D."""
    if ndim == 2:
        return nn.Linear(in_width, out_width)
    return (nn.Conv1d if ndim == 3 else nn.Conv2d)(in_width, out_width, kernel_size=1)


def make_adapter(hint: FeatureHint, student_feature: Tensor, teacher_feature: Tensor) -> nn.Module:
    """The adapter from the student's width to the teacher's (see :func:`adapter_layer`), on the student's device."""
    s = _channels_first(student_feature, hint.student_layout, f"hint {hint.name}: student feature")
    t = _channels_first(teacher_feature, hint.teacher_layout, f"hint {hint.name}: teacher feature")
    if s.ndim != t.ndim:
        raise ValueError(
            f"hint {hint.name}: student feature {tuple(s.shape)} and teacher feature {tuple(t.shape)} must have "
            "the same rank (2-D, 3-D or 4-D)"
        )
    adapter = adapter_layer(s.ndim, s.shape[1], t.shape[1]).to(device=s.device)
    return adapter.double() if s.dtype == torch.float64 else adapter


def align_feature(
    hint: FeatureHint, adapter: nn.Module, student_feature: Tensor, teacher_feature: Tensor
) -> tuple[Tensor, Tensor]:
    """(adapted student feature, teacher feature), both channels-first with the teacher's shape."""
    s = _channels_first(student_feature, hint.student_layout, f"hint {hint.name}: student feature")
    t = _channels_first(teacher_feature, hint.teacher_layout, f"hint {hint.name}: teacher feature")
    adapted = adapter(s)
    if adapted.ndim > 2 and adapted.shape[2:] != t.shape[2:]:
        mode = "linear" if adapted.ndim == 3 else "bilinear"
        adapted = F.interpolate(adapted, size=tuple(t.shape[2:]), mode=mode, align_corners=False)
    if adapted.shape != t.shape:
        raise ValueError(
            f"hint {hint.name}: the adapted student feature {tuple(adapted.shape)} does not match the teacher "
            f"feature {tuple(t.shape)} (channels-first); check the layouts and the batch"
        )
    return adapted, t


def hint_loss(hint: FeatureHint, adapter: nn.Module, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """MSE between the adapted, resampled student feature and the detached teacher feature."""
    adapted, target = align_feature(hint, adapter, student_feature, teacher_feature)
    return F.mse_loss(adapted, target.detach())
