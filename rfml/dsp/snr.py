"""Blind SNR estimation for I/Q frames: the M2M4 moment estimator, snapping estimates to a training-SNR grid, and
per-SNR error tables for any estimator (M2M4 or a learned one such as ``rfml.trainers.SNRRegressor``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_FLOOR_DB = -30.0
DEFAULT_CEIL_DB = 50.0


def _power(x: Tensor) -> Tensor:
    """``|x|²`` per sample, ``[B, L]`` in float64, from ``[B, 2, L]`` real or ``[B, L]`` complex frames."""
    if x.is_complex():
        if x.ndim != 2:
            raise ValueError(f"m2m4: complex x must be [B, L] (frames of complex samples), got shape {list(x.shape)}")
        power = x.to(torch.complex128).abs().square()
    else:
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(
                f"m2m4: real x must be [B, 2, L] (I and Q channels) or complex [B, L], got shape {list(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"m2m4: x must hold floating-point samples, got dtype {x.dtype}")
        iq = x.to(torch.float64)
        power = iq[:, 0].square() + iq[:, 1].square()
    if power.shape[-1] < 1:
        raise ValueError(f"m2m4: frames need at least one sample, got shape {list(x.shape)}")
    return power


def m2m4(x: Tensor, *, floor_db: float = DEFAULT_FLOOR_DB, ceil_db: float = DEFAULT_CEIL_DB) -> Tensor:
    """Blind per-frame SNR (dB) by the M2M4 moment estimator (Pauluzzi and Beaulieu, 2000).

    For a constant-modulus signal of power S in complex white Gaussian noise of power N, the second and fourth
    moments of the samples are ``M2 = E|x|² = S + N`` and ``M4 = E|x|⁴ = S² + 4SN + 2N²``, so
    ``S = sqrt(2·M2² − M4)`` and ``N = M2 − S``. Each frame's moments are its sample means; the estimate is
    ``10·log10(S / N)``, the per-sample SNR over the full sampled band. It is blind (needs no symbols, timing or
    carrier) and invariant to the frame's scale, but biased for non-constant-modulus signals (QAM, analog) and
    under multipath, and noisy on short frames.

    Args:
        x: frames ``[B, 2, L]`` (I and Q channels, real floating point) or ``[B, L]`` complex.
        floor_db: the estimate when the moments show no signal (``2·M2² − M4 ≤ 0``, which sampling noise causes
            at low SNR; also an all-zero frame); every estimate is clamped to at least this.
        ceil_db: the estimate when the moments show no noise (``N ≤ 0``: a noiseless constant-modulus frame);
            every estimate is clamped to at most this.

    Returns:
        The SNR in dB per frame, ``[B]`` float32; finite for finite float32-range frames (NaN for frames holding NaN).
    """
    if not floor_db < ceil_db:
        raise ValueError(f"m2m4: floor_db must be below ceil_db, got floor_db={floor_db} and ceil_db={ceil_db}")
    power = _power(x)
    m2 = power.mean(-1)
    m4 = power.square().mean(-1)
    signal = (2.0 * m2.square() - m4).clamp_min(0.0).sqrt()
    noise = m2 - signal
    # Both ratios are computed on safe denominators; the degenerate frames then take the floor or the ceiling.
    ratio = signal / torch.where(noise > 0, noise, torch.ones_like(noise))
    snr_db = 10.0 * torch.log10(torch.where(signal > 0, ratio, torch.ones_like(ratio)))
    snr_db = torch.where(noise > 0, snr_db, torch.full_like(snr_db, ceil_db))
    snr_db = torch.where(signal > 0, snr_db, torch.full_like(snr_db, floor_db))
    return snr_db.clamp(floor_db, ceil_db).to(torch.float32)


def round_to_grid(snr_db: Tensor, grid: Sequence[int] | Tensor, bias_db: float = 0.0) -> Tensor:
    """Index of the grid SNR nearest to ``snr_db + bias_db`` (ties go to the higher), clamped to the grid's ends.

    Used to pick the training SNR (the model trained at that grid point) for a frame whose SNR was estimated.
    A positive ``bias_db`` rounds optimistically: a model trained at an SNR somewhat above the true one loses
    less accuracy than one trained below it (Wang et al., IEEE WCL 2020, the SNR-offset study: on RadioML a −4 dB
    error is catastrophic at mid SNR while +4 dB costs little).

    Args:
        snr_db: estimated SNRs in dB, any shape, finite.
        grid: the training SNRs in dB, strictly ascending, e.g. ``range(-20, 20, 2)``.
        bias_db: added to every estimate before rounding.

    Returns:
        int64 indices into ``grid``, the shape of ``snr_db``.
    """
    values = torch.as_tensor(grid, dtype=torch.float64).flatten().to(snr_db.device)
    if values.numel() == 0:
        raise ValueError("round_to_grid: grid must hold at least one SNR, got an empty grid")
    if values.numel() > 1 and not bool((values[1:] > values[:-1]).all()):
        raise ValueError(f"round_to_grid: grid must be strictly ascending, got {values.tolist()}")
    if not math.isfinite(bias_db):
        raise ValueError(f"round_to_grid: bias_db must be finite, got {bias_db}")
    target = snr_db.to(torch.float64) + bias_db
    if not bool(torch.isfinite(target).all()):
        raise ValueError("round_to_grid: snr_db must be finite; it holds NaN or infinite values")
    if values.numel() == 1:
        return torch.zeros(target.shape, dtype=torch.int64, device=target.device)
    # The two grid points around each target; beyond the ends both lie on the near side, which clamps.
    above = torch.searchsorted(values, target).clamp(1, values.numel() - 1)
    below = above - 1
    # On a tie the distance up equals the distance down and the higher grid point wins.
    take_above = (values[above] - target) <= (target - values[below])
    return torch.where(take_above, above, below)


def _check_pair(estimated: Tensor, true: Tensor, where: str) -> tuple[Tensor, Tensor]:
    if estimated.shape != true.shape:
        raise ValueError(
            f"{where}: estimated and true must have the same shape, got {list(estimated.shape)} and {list(true.shape)}"
        )
    return estimated.detach().flatten().to(torch.float64).cpu(), true.detach().flatten().to(torch.float64).cpu()


def _errors(error: Tensor) -> dict[str, float]:
    return {
        "mae": float(error.abs().mean()),
        "bias": float(error.mean()),
        "rmse": float(error.square().mean().sqrt()),
        "count": int(error.numel()),
    }


def estimation_errors(estimated: Tensor, true: Tensor) -> dict[int, dict[str, float]]:
    """Errors of SNR estimates per true SNR: ``{snr_db: {"mae", "bias", "rmse", "count"}}``, keys ascending.

    ``mae`` is the mean |estimated − true| (dB), ``bias`` the mean of estimated − true (dB; positive means
    optimistic), ``rmse`` the root mean square error (dB) and ``count`` the number of frames. The true SNRs must be
    whole dB (the datasets' grid); :func:`overall_errors` gives the same figures over all frames.
    """
    estimated, true = _check_pair(estimated, true, "estimation_errors")
    if not bool((true == true.round()).all()):
        raise ValueError("estimation_errors: true SNRs must be whole dB (they are grouped by value)")
    error = estimated - true
    return {int(snr): _errors(error[true == snr]) for snr in torch.unique(true).tolist()}


def overall_errors(estimated: Tensor, true: Tensor) -> dict[str, float]:
    """``mae``, ``bias``, ``rmse`` (dB) and ``count`` over all frames, as in :func:`estimation_errors`."""
    estimated, true = _check_pair(estimated, true, "overall_errors")
    if estimated.numel() == 0:
        raise ValueError("overall_errors: no estimates given")
    return _errors(estimated - true)
