"""Input representations (I/Q, amplitude/phase, centred spectrum) and per-frame normalisation.

All functions take and return batches shaped [B, 2, L]; the output keeps the input's floating dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["NORMS", "VIEWS", "View", "apply_view", "unit_power"]

VIEWS: tuple[str, ...] = ("iq", "amp_phase", "fft_iq", "fft_amp_phase")
NORMS: tuple[str, ...] = ("none", "rms", "l1", "l2", "standardize")

# Frames whose l1/l2 norm is below this are divided by it instead, so all-zero frames stay zero, not NaN.
NORM_EPS = 1e-12


def _check_kind(kind: str) -> str:
    if kind not in VIEWS:
        raise ValueError(f"kind must be one of {VIEWS}, got {kind!r}")
    return kind


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def check_batch(x: Any) -> None:
    """Raise ``ValueError`` unless ``x`` is a real floating-point tensor shaped [B, 2, L]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a tensor shaped [B, 2, L], got {type(x).__name__}")
    if x.ndim != 3 or x.shape[1] != 2:
        raise ValueError(f"x must be shaped [B, 2, L] (two real channels per frame), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a real floating-point tensor, got dtype {x.dtype}")


def _centred_spectrum(x: Tensor) -> Tensor:
    # Orthonormal FFT (1/sqrt(L)) preserves energy; fftshift puts DC at index L // 2.
    z = torch.complex(x[:, 0], x[:, 1])
    return torch.fft.fftshift(torch.fft.fft(z, dim=-1, norm="ortho"), dim=-1)


def _view(x: Tensor, kind: str) -> Tensor:
    if kind == "iq":
        return x
    if kind == "amp_phase":
        i, q = x[:, 0], x[:, 1]
        return torch.stack((torch.hypot(i, q), torch.atan2(q, i)), dim=1)
    spectrum = _centred_spectrum(x)
    if kind == "fft_iq":
        return torch.stack((spectrum.real, spectrum.imag), dim=1)
    return torch.stack((spectrum.abs(), spectrum.angle()), dim=1)


def unit_power(x: Tensor) -> Tensor:
    """Each I/Q frame of ``x`` [B, 2, L] scaled to unit mean power, mean over L of I² + Q² = 1 (all-zero frames stay 0).

    Applied to the signal before any view: the phase of ``amp_phase`` is untouched and, the FFT being orthonormal,
    the spectrum of a unit-power frame has unit mean power too.
    """
    power = x.square().sum(dim=1, keepdim=True).mean(dim=2, keepdim=True)
    return x / power.sqrt().clamp_min(NORM_EPS)


def _frame_norm(x: Tensor, norm: str) -> Tensor:
    if norm == "l1":
        scale = x.abs().sum(dim=(1, 2), keepdim=True)
    else:
        scale = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
    return x / scale.clamp_min(NORM_EPS)


def apply_view(x: Tensor, kind: str, norm: str = "none") -> Tensor:
    """Stateless view plus optional ``"rms"``/``"l1"``/``"l2"`` per-frame normalisation of a [B, 2, L] batch.

    ``"standardize"`` needs statistics fitted on training data, so it is only available through :class:`View`.
    """
    _check_kind(kind)
    _check_norm(norm)
    if norm == "standardize":
        raise ValueError("norm='standardize' needs fitted statistics; use View(kind, 'standardize').fit(train_batches)")
    check_batch(x)
    if norm == "rms":
        return _view(unit_power(x), kind)
    viewed = _view(x, kind)
    return viewed if norm == "none" else _frame_norm(viewed, norm)


class View:
    """A view (``VIEWS``) followed by a normalisation (``NORMS``), applied to [B, 2, L] batches.

    ``"rms"`` scales each I/Q frame to unit mean power before the view (:func:`unit_power`); it is the AMR default.
    A frame's scale carries no class information, real RadioML frames come L1-normalised (values near 1/L, each
    divided by the sum of its magnitudes) while generated frames keep their physical scale (unit signal power plus the
    noise, so an RMS near 1 at high SNR and near 10 at −20 dB), and networks without normalisation layers see
    inputs that differ by orders of magnitude between the two, and between SNRs. Unit power maps a
    real file's frames and generated frames of the same signal to the same input, so a model trained on one reads
    the other, and it puts the inputs at the scale the default initialisations expect. ``"l1"`` divides each
    (viewed) frame by the sum of the absolute values of its 2·L entries and ``"l2"`` by their Euclidean norm.
    ``"standardize"`` maps channel ``c`` to ``(x - mean[c]) / std[c]``, with the population mean and std of the
    viewed training data from :meth:`fit`; ``std`` is floored at ``eps`` so a constant channel gives zeros rather
    than inf/NaN.
    """

    def __init__(self, kind: str = "iq", norm: str = "none", eps: float = 1e-6) -> None:
        self.kind = _check_kind(kind)
        self.norm = _check_norm(norm)
        if not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.fitted = False
        self.mean = torch.zeros(2, dtype=torch.float64)
        self.std = torch.ones(2, dtype=torch.float64)

    def __call__(self, x: Tensor) -> Tensor:
        if self.norm != "standardize":  # the stateless norms: one implementation, apply_view's
            return apply_view(x, self.kind, self.norm)
        check_batch(x)
        viewed = _view(x, self.kind)
        if not self.fitted:
            raise RuntimeError(
                f"{self!r} is not fitted; call .fit(batches) on the training split before using norm='standardize'"
            )
        mean = self.mean.to(device=x.device, dtype=x.dtype).view(1, 2, 1)
        std = self.std.to(device=x.device, dtype=x.dtype).view(1, 2, 1)
        return (viewed - mean) / std

    def fit(self, batches: Iterable[Tensor | Mapping[str, Tensor] | Sequence[Tensor]]) -> View:
        """Fit per-channel mean and std of the viewed data over all batches; returns ``self``.

        Each item is a [B, 2, L] tensor, a batch dict with key ``"x"``, or a tuple whose first element
        is one (so an ``(x, y, snr)`` loader works). Batches are merged with Chan's parallel update in
        float64, which avoids the cancellation of a sum-of-squares formula when the mean is large
        compared with the spread.
        """
        count = 0
        mean = torch.zeros(2, dtype=torch.float64)
        m2 = torch.zeros(2, dtype=torch.float64)
        for item in batches:
            x = item if isinstance(item, Tensor) else item["x"] if isinstance(item, Mapping) else item[0]
            check_batch(x)
            n_b = x.shape[0] * x.shape[2]
            if n_b == 0:
                continue
            viewed = _view(x, self.kind).to(torch.float64)
            mean_b = viewed.mean(dim=(0, 2))
            m2_b = (viewed - mean_b.view(1, 2, 1)).square().sum(dim=(0, 2))
            mean_b, m2_b = mean_b.cpu(), m2_b.cpu()
            total = count + n_b
            delta = mean_b - mean
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta.square() * (count * n_b / total)
            count = total
        if count == 0:
            raise ValueError("batches must contain at least one non-empty [B, 2, L] batch to fit on")
        self.mean = mean
        self.std = (m2 / count).sqrt().clamp_min(self.eps)
        self.fitted = True
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (str, float, bool, lists) that can go into any checkpoint."""
        return {
            "kind": self.kind,
            "norm": self.norm,
            "eps": self.eps,
            "fitted": self.fitted,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> View:
        """Restore :meth:`state_dict` output; ``kind`` and ``norm`` must match this view. Returns ``self``."""
        missing = {"kind", "norm", "eps", "fitted", "mean", "std"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        if state["kind"] != self.kind or state["norm"] != self.norm:
            raise ValueError(
                f"state is for View(kind={state['kind']!r}, norm={state['norm']!r}), "
                f"not View(kind={self.kind!r}, norm={self.norm!r})"
            )
        mean = torch.as_tensor(state["mean"], dtype=torch.float64)
        std = torch.as_tensor(state["std"], dtype=torch.float64)
        if mean.shape != (2,) or std.shape != (2,):
            raise ValueError(
                f"state mean and std must each have 2 values, got {list(mean.shape)} and {list(std.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError(
                f"state mean must be finite and std finite and positive, got {state['mean']}, {state['std']}"
            )
        if not float(state["eps"]) > 0:
            raise ValueError(f"state eps must be a positive number, got {state['eps']!r}")
        self.eps = float(state["eps"])
        self.fitted = bool(state["fitted"])
        self.mean, self.std = mean, std
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> View:
        """Build a view from :meth:`state_dict` output."""
        # Defaults only get us to load_state_dict, which names any missing key.
        view = cls(state.get("kind", "iq"), state.get("norm", "none"), float(state.get("eps", 1e-6)))
        return view.load_state_dict(state)

    def __repr__(self) -> str:
        text = f"View(kind={self.kind!r}, norm={self.norm!r}"
        if self.norm == "standardize":
            stats = (
                f", mean={[round(v, 6) for v in self.mean.tolist()]}, std={[round(v, 6) for v in self.std.tolist()]}"
            )
            text += f", fitted={self.fitted}" + (stats if self.fitted else "")
        return text + ")"
