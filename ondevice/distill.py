"""Knowledge distillation for any student/teacher pair of classifiers: Hinton KD, feature hints read through
forward hooks, and a LightningModule that trains the student against a frozen teacher."""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy

LAYOUTS = ("channels_first", "channels_last")
DEFAULT_LR = 1e-3


# ---- losses ----------------------------------------------------------------------------------------------------


def _flat_logits(logits: Tensor, what: str) -> Tensor:
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


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch (every position for [B, ..., C] logits).

    The T² factor (Hinton et al. 2015) keeps the gradient magnitude comparable across temperatures, since the
    softened gradient shrinks as 1/T²; for large T the gradient tends to ((s - mean s) - (t - mean t)) / (C·B).
    """
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    log_p_s = F.log_softmax(_flat_logits(student_logits, "student logits") / temperature, dim=-1)
    log_p_t = F.log_softmax(_flat_logits(teacher_logits, "teacher logits") / temperature, dim=-1)
    # log_target=True: the teacher stays in log space, so tiny probabilities never turn into 0 · log 0.
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def classification_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of logits [B, C] (or [B, ..., C]) against class indices [B] (or [B, ...])."""
    flat = _flat_logits(logits, "student logits")
    if target.numel() != flat.shape[0]:
        raise ValueError(
            f"targets: expected {flat.shape[0]} class indices for logits {tuple(logits.shape)}, "
            f"got shape {tuple(target.shape)}"
        )
    return F.cross_entropy(flat, target.reshape(-1))


def _combine(ce: Tensor, kd: Tensor, alpha: float, hint_terms: Iterable[tuple[float, Tensor]]) -> Tensor:
    # At alpha = 0 the total is the CE tensor itself: bitwise CE, and immune to a NaN/inf KD term.
    total = ce if alpha == 0 else (1 - alpha) * ce + alpha * kd
    for weight, value in hint_terms:
        total = total + weight * value
    return total


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


# ---- feature hints ---------------------------------------------------------------------------------------------


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


def _adapter(ndim: int, in_width: int, out_width: int) -> nn.Module:
    if ndim == 2:
        return nn.Linear(in_width, out_width)
    return (nn.Conv1d if ndim == 3 else nn.Conv2d)(in_width, out_width, kernel_size=1)


def make_adapter(hint: FeatureHint, student_feature: Tensor, teacher_feature: Tensor) -> nn.Module:
    """The adapter from the student's width to the teacher's: nn.Linear for 2-D, a 1×1 Conv1d/Conv2d for 3-D/4-D."""
    s = _channels_first(student_feature, hint.student_layout, f"hint {hint.name}: student feature")
    t = _channels_first(teacher_feature, hint.teacher_layout, f"hint {hint.name}: teacher feature")
    if s.ndim != t.ndim:
        raise ValueError(
            f"hint {hint.name}: student feature {tuple(s.shape)} and teacher feature {tuple(t.shape)} must have "
            "the same rank (2-D, 3-D or 4-D)"
        )
    adapter = _adapter(s.ndim, s.shape[1], t.shape[1]).to(device=s.device)
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


class DistillationLoss(nn.Module):
    """The hybrid objective ``(1 - alpha) · CE + alpha · KD(T) + Σ wᵢ · hintᵢ`` with every term reported by name.

    Holds no parameters: the hint adapters belong to the caller (see :class:`DistillationModule`).

    Args:
        alpha: weight of the KD term, in [0, 1]; 0 gives plain cross-entropy.
        temperature: softmax temperature of the KD term, > 0.
        hints: feature hints (:class:`FeatureHint`, or dicts of its fields).
    """

    def __init__(self, alpha: float = 0.9, temperature: float = 4.0, hints: list[FeatureHint] | None = None) -> None:
        super().__init__()
        _check_alpha(alpha)
        _check_temperature(temperature)
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
        terms = {
            "ce": classification_ce(student_logits, target),
            "kd": kd_loss(student_logits, teacher_logits.detach(), self.temperature),
        }
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
        terms["total"] = _combine(terms["ce"], terms["kd"], self.alpha, hint_terms)
        return terms


# ---- checkpoints -----------------------------------------------------------------------------------------------


def _load_state_dict_file(path: str | os.PathLike[str]) -> Mapping[str, Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{os.fspath(path)}: expected a state_dict or a Lightning checkpoint with a 'state_dict'")
    return state


def load_teacher_weights(teacher: nn.Module, path: str | os.PathLike[str]) -> str:
    """Load a plain state_dict or a Lightning checkpoint into ``teacher``, strictly; returns the key prefix used.

    A Lightning checkpoint prefixes the keys with the attribute that held the network (``model.``, ``student.``);
    the prefix is the one under which the checkpoint's keys are exactly the teacher's keys.
    """
    state = _load_state_dict_file(path)
    expected = set(teacher.state_dict())
    prefixes = {""}
    for key in state:
        parts = key.split(".")
        prefixes.update(".".join(parts[:i]) + "." for i in range(1, len(parts)) if ".".join(parts[i:]) in expected)
    best: tuple[int, str, set[str]] = (-1, "", set())
    for prefix in sorted(prefixes):
        found = {key[len(prefix) :] for key in state if key.startswith(prefix)}
        if found == expected:
            weights = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
            try:
                teacher.load_state_dict(weights, strict=True)
            except RuntimeError as err:  # shapes differ under matching names
                raise ValueError(
                    f"{os.fspath(path)}: teacher weights under prefix {prefix!r} do not fit: {err}"
                ) from err
            return prefix
        best = max(best, (len(found & expected), prefix, found), key=lambda item: item[0])
    _, prefix, found = best
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    raise ValueError(
        f"{os.fspath(path)}: its keys do not match the teacher {type(teacher).__name__} under any prefix; "
        f"closest prefix {prefix!r}: missing {missing[:5]}{' …' if len(missing) > 5 else ''}, "
        f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}"
    )


def student_state_dict(checkpoint_path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The student's weights in a :class:`DistillationModule` checkpoint, without the ``student.`` prefix."""
    state = _load_state_dict_file(checkpoint_path)
    weights = {key[len("student.") :]: value for key, value in state.items() if key.startswith("student.")}
    if not weights:
        raise ValueError(
            f"{os.fspath(checkpoint_path)}: no 'student.*' keys; expected a DistillationModule checkpoint "
            f"(first keys: {list(state)[:5]})"
        )
    return weights


# ---- teacher-logit cache ---------------------------------------------------------------------------------------


def row_digests(x: Tensor) -> list[bytes]:
    """A 16-byte BLAKE2b digest of each row of ``x`` (dtype and row shape included), the teacher-cache key."""
    rows = x.detach().cpu().contiguous()
    header = f"{rows.dtype}{tuple(rows.shape[1:])}".encode()
    # A fixed-length digest of the header keeps header and row bytes from running into each other.
    base = hashlib.blake2b(hashlib.blake2b(header, digest_size=16).digest(), digest_size=16)
    data = rows.reshape(rows.shape[0], math.prod(rows.shape[1:])).view(torch.uint8).numpy()
    digests = []
    for row in data:  # hashing is per row by nature; each call hashes a whole example in C
        h = base.copy()
        h.update(row)
        digests.append(h.digest())
    return digests


# ---- the LightningModule ---------------------------------------------------------------------------------------


def split_batch(batch: Any) -> tuple[Any, Tensor | None]:
    """(inputs, targets) of a ``{"x", "y", ...}`` dict, an ``(x, y, ...)`` tuple/list or a bare input tensor."""
    if isinstance(batch, Mapping):
        if "x" not in batch:
            raise ValueError(f"a dict batch needs the inputs under 'x' (and targets under 'y'); got keys {list(batch)}")
        return batch["x"], batch.get("y")
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0], batch[1] if len(batch) > 1 else None
    if isinstance(batch, Tensor):
        return batch, None
    raise ValueError(
        f"expected a batch as a dict with 'x'/'y', a tuple/list (x, y) or a tensor, got {type(batch).__name__}"
    )


class DistillationModule(L.LightningModule):
    """Trains ``student`` on the hybrid loss against a frozen ``teacher``; checkpoints keep the student alone.

    Args:
        student: the network being trained; maps inputs to logits [B, C] (or [B, ..., C]).
        teacher: the network distilled from; frozen, always in eval mode, run under ``torch.no_grad``.
        loss: the objective; default ``DistillationLoss()`` (alpha 0.9, T 4, no hints).
        teacher_checkpoint: a state_dict or Lightning checkpoint file loaded into the teacher (see
            :func:`load_teacher_weights`).
        optimizer: a callable from parameters to an optimizer (LightningCLI ``OptimizerCallable``); default
            AdamW with lr 1e-3. It receives the student's and the hint adapters' parameters only.
        cache_teacher_logits: keep the teacher's logits for every example seen, keyed by a hash of the example's
            bytes, so the teacher runs once per distinct example. Right for deterministic data (no random
            augmentation); the cache lives in CPU memory and grows with the number of distinct examples.
            Feature hints need the teacher's features each step, so they cannot be combined with the cache.

    Hint adapters are sized by one dry run on an example input: ``example_input_array`` when set, else the first
    batch of the LightningDataModule's training loader, else call :meth:`build_adapters` before fitting.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        loss: DistillationLoss | None = None,
        teacher_checkpoint: str | None = None,
        optimizer: OptimizerCallable | None = None,
        cache_teacher_logits: bool = False,
    ) -> None:
        super().__init__()
        # The networks, the loss and the optimizer factory are objects, not hyperparameters: keeping them out
        # keeps the checkpoint loadable with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["student", "teacher", "loss", "optimizer"])
        self.student = student
        self.teacher = teacher
        self.loss = loss if loss is not None else DistillationLoss()
        if cache_teacher_logits and self.loss.hints:
            raise ValueError(
                "DistillationModule: cache_teacher_logits cannot be combined with feature hints, since the teacher "
                f"must run every step to produce the hinted features {[h.teacher for h in self.loss.hints]}; "
                "drop the hints or set cache_teacher_logits=False"
            )
        find_modules(student, (hint.student for hint in self.loss.hints), "student")
        find_modules(teacher, (hint.teacher for hint in self.loss.hints), "teacher")
        if teacher_checkpoint is not None:
            load_teacher_weights(teacher, teacher_checkpoint)
        teacher.requires_grad_(False)
        teacher.eval()
        self.adapters = nn.ModuleDict()
        self.optimizer_factory = optimizer
        self.cache_teacher_logits = cache_teacher_logits
        self.teacher_cache: dict[bytes, Tensor] = {}

    def train(self, mode: bool = True) -> DistillationModule:
        """Set the student (and adapters) to ``mode``; the teacher stays in eval mode whatever ``mode`` is."""
        super().train(mode)
        # Lightning calls .train() at every epoch start; the teacher's dropout and batch-norm must not switch.
        self.teacher.eval()
        return self

    def forward(self, x: Any) -> Tensor:
        """The student's logits."""
        return self.student(x)

    # ---- adapters ----

    def _missing_hints(self) -> list[FeatureHint]:
        return [hint for hint in self.loss.hints if hint.key not in self.adapters]

    @torch.no_grad()
    def build_adapters(self, example_input: Any) -> None:
        """Size the hint adapters by one forward pass of both networks on ``example_input`` (a batch of inputs).

        Adapters that already exist are kept; call this before fitting when neither ``example_input_array``
        nor a LightningDataModule can provide an example.
        """
        missing = self._missing_hints()
        if not missing:
            return
        param = next(self.student.parameters(), None)
        if isinstance(example_input, Tensor):
            example_input = example_input[:2]
            if param is not None:
                example_input = example_input.to(param.device)
        # The dry run must not update the student's batch-norm statistics, so it runs in eval mode.
        modes = {module: module.training for module in self.student.modules()}
        self.student.eval()
        try:
            with (
                FeatureRecorder(self.student, (h.student for h in missing), "student") as s_rec,
                FeatureRecorder(self.teacher, (h.teacher for h in missing), "teacher") as t_rec,
            ):
                self.student(example_input)
                self.teacher(example_input)
        finally:
            for module, mode in modes.items():
                module.training = mode
        for hint in missing:
            self.adapters[hint.key] = make_adapter(hint, s_rec.get(hint.student), t_rec.get(hint.teacher))

    def _example_input(self) -> Any:
        if self.example_input_array is not None:
            return self.example_input_array
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if datamodule is not None:
            return split_batch(next(iter(datamodule.train_dataloader())))[0]
        return None

    def setup(self, stage: str) -> None:
        """Build the hint adapters before Lightning builds the optimizer (which needs their parameters)."""
        if stage == "fit" and self._missing_hints():
            example = self._example_input()
            # Without an example, resuming still works: on_load_checkpoint rebuilds the adapters from their
            # saved shapes before configure_optimizers; otherwise configure_optimizers says what to do.
            if example is not None:
                self.build_adapters(example)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The optimizer over the student's and adapters' parameters (never the teacher's)."""
        missing = self._missing_hints()
        if missing:
            raise RuntimeError(
                f"DistillationModule: the adapters of hints {[h.name for h in missing]} are not built; they need one "
                "example input to learn the feature widths before the optimizer exists. Set "
                "`module.example_input_array = x` (a batch of inputs), call `module.build_adapters(x)` before "
                "trainer.fit, or fit with a LightningDataModule"
            )
        params = [p for p in itertools.chain(self.student.parameters(), self.adapters.parameters()) if p.requires_grad]
        if self.optimizer_factory is None:
            return torch.optim.AdamW(params, lr=DEFAULT_LR)
        return self.optimizer_factory(params)

    # ---- steps ----

    def _teacher_logits(self, x: Any) -> tuple[Tensor, float | None]:
        if not self.cache_teacher_logits:
            with torch.no_grad():
                return self.teacher(x), None
        keys = row_digests(x)
        cached = [self.teacher_cache.get(key) for key in keys]
        missing = [i for i, value in enumerate(cached) if value is None]
        if missing:
            # Only the rows never seen run; the teacher is in eval mode, so a row's logits do not depend on the batch.
            rows = x if len(missing) == len(keys) else x[torch.tensor(missing, device=x.device)]
            with torch.no_grad():
                fresh = self.teacher(rows).detach().cpu()
            for i, logits in zip(missing, fresh, strict=True):
                cached[i] = self.teacher_cache[keys[i]] = logits
        return torch.stack(cached).to(x.device), 1.0 - len(missing) / len(keys)

    def _terms(self, x: Any, y: Tensor) -> tuple[dict[str, Tensor], Tensor, float | None]:
        hints = self.loss.hints
        if not hints:
            student_logits = self.student(x)
            teacher_logits, hit_rate = self._teacher_logits(x)
            return self.loss(student_logits, teacher_logits, y), student_logits, hit_rate
        if self._missing_hints():  # validate/test without fit: size the adapters on this batch
            self.build_adapters(x)
        with (
            FeatureRecorder(self.student, (h.student for h in hints), "student") as s_rec,
            FeatureRecorder(self.teacher, (h.teacher for h in hints), "teacher") as t_rec,
        ):
            student_logits = self.student(x)
            with torch.no_grad():
                teacher_logits = self.teacher(x)
        s_features = {h.student: s_rec.get(h.student) for h in hints}
        t_features = {h.teacher: t_rec.get(h.teacher) for h in hints}
        terms = self.loss(student_logits, teacher_logits, y, s_features, t_features, self.adapters)
        return terms, student_logits, None

    def _batch(self, batch: Any, stage: str) -> tuple[Any, Tensor, int]:
        x, y = split_batch(batch)
        if y is None:
            raise ValueError(f"{stage} batches need targets: a dict with 'y' or a tuple (x, y)")
        return x, y, int(y.shape[0]) if y.ndim > 0 else 1

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The hybrid loss; logs ``train/ce``, ``train/kd``, ``train/hint/...`` and ``train/loss`` (the total)."""
        x, y, batch_size = self._batch(batch, "training")
        terms, _, hit_rate = self._terms(x, y)
        for name, value in terms.items():
            key = "loss" if name == "total" else name
            self.log(f"train/{key}", value, batch_size=batch_size, prog_bar=key == "loss")
        if hit_rate is not None:
            self.log("train/teacher_cache_hit_rate", hit_rate, batch_size=batch_size, on_step=False, on_epoch=True)
        return terms["total"]

    def _evaluate(self, batch: Any, stage: str) -> None:
        x, y, batch_size = self._batch(batch, stage)
        terms, student_logits, hit_rate = self._terms(x, y)
        flat = _flat_logits(student_logits, "student logits")
        # Micro accuracy weighted by batch_size averages to the exact accuracy over the epoch.
        acc = multiclass_accuracy(flat.argmax(-1), y.reshape(-1), num_classes=flat.shape[-1], average="micro")
        self.log(f"{stage}/loss", terms["ce"], batch_size=batch_size, prog_bar=True)
        self.log(f"{stage}/acc", acc, batch_size=batch_size, prog_bar=True)
        for name, value in terms.items():
            if name != "ce":
                self.log(f"{stage}/{name}", value, batch_size=batch_size)
        if hit_rate is not None:
            self.log(f"{stage}/teacher_cache_hit_rate", hit_rate, batch_size=batch_size)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Logs ``val/loss`` (the student's CE), ``val/acc``, ``val/kd``, ``val/hint/...`` and ``val/total``."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """As :meth:`validation_step`, under ``test/``."""
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The student's logits."""
        return self.student(split_batch(batch)[0])

    # ---- checkpoints ----

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher's weights: the checkpoint holds the student (and the adapters, to resume)."""
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith("teacher.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the current teacher's weights back and rebuild missing adapters, so strict loading works."""
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state.setdefault(f"teacher.{key}", value)
        for hint in self._missing_hints():
            weight = state.get(f"adapters.{hint.key}.weight")
            if weight is not None:
                param = next(self.student.parameters(), weight)
                adapter = _adapter(weight.ndim, weight.shape[1], weight.shape[0])
                self.adapters[hint.key] = adapter.to(device=param.device, dtype=weight.dtype)
