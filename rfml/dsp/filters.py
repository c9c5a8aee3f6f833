"""FIR designs shared by the modulators and the channel: RRC, Gaussian, fractional-delay sinc."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def rrc_taps(rolloff: float, samples_per_symbol: int, span_symbols: int = 12) -> torch.Tensor:
    """Root-raised-cosine taps with unit energy (sum of squares = 1), ``span_symbols`` long.

    Unit energy makes the matched-filter output at the symbol centre equal the transmitted symbol.
    """
    if not 0.0 < rolloff <= 1.0:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff}")
    n = span_symbols * samples_per_symbol
    t = (np.arange(n + 1) - n / 2) / samples_per_symbol  # in symbols
    a = rolloff
    taps = np.empty_like(t)
    centre = np.isclose(t, 0.0)
    edge = np.isclose(np.abs(t), 1.0 / (4.0 * a))
    rest = ~(centre | edge)
    tr = t[rest]
    taps[rest] = (np.sin(np.pi * tr * (1 - a)) + 4 * a * tr * np.cos(np.pi * tr * (1 + a))) / (
        np.pi * tr * (1 - (4 * a * tr) ** 2)
    )
    taps[centre] = 1 - a + 4 * a / np.pi
    taps[edge] = (a / math.sqrt(2)) * (
        (1 + 2 / np.pi) * np.sin(np.pi / (4 * a)) + (1 - 2 / np.pi) * np.cos(np.pi / (4 * a))
    )
    taps /= np.sqrt(np.sum(taps**2))
    return torch.from_numpy(taps.astype(np.float32))


def gaussian_frequency_pulse(bt: float, samples_per_symbol: int, span_symbols: int = 4) -> torch.Tensor:
    """Rectangular symbol pulse smoothed by a Gaussian filter of bandwidth-time product ``bt``.

    Normalised to unit area, so one symbol of value ``a`` advances the phase by ``a * pi * h`` when
    scaled by ``pi * h``. This is the frequency pulse of GFSK/GMSK.
    """
    if bt <= 0:
        raise ValueError(f"bt must be > 0, got {bt}")
    sps = samples_per_symbol
    t = (np.arange(span_symbols * sps + 1) - span_symbols * sps / 2) / sps  # in symbols
    sigma = math.sqrt(math.log(2)) / (2 * math.pi * bt)  # Gaussian std in symbols
    gauss = np.exp(-0.5 * (t / sigma) ** 2)
    pulse = np.convolve(gauss, np.ones(sps), mode="same")
    return torch.from_numpy((pulse / pulse.sum()).astype(np.float32))


def _kaiser_sinc(t: np.ndarray, half_width: int, beta: float) -> np.ndarray:
    inside = np.clip(1.0 - (t / half_width) ** 2, 0.0, None)
    return np.sinc(t) * np.i0(beta * np.sqrt(inside)) / np.i0(beta) * (np.abs(t) < half_width)


def farrow_coefficients(half_width: int = 8, degree: int = 5, beta: float = 8.0) -> torch.Tensor:
    """Farrow interpolator ``[degree + 1, 2 * half_width]`` float32.

    Tap ``j`` of a Kaiser-windowed sinc interpolating at fraction ``mu`` in [0, 1) between samples
    ``k`` and ``k + 1`` is ``sum_d C[d, j] * mu**d`` and multiplies sample ``k - half_width + 1 + j``.
    Half width 8, degree 5 keeps the error below -75 dB up to 0.3 cycles/sample; half width 6,
    degree 4, beta 7 below -60 dB.
    """
    mu = np.linspace(0.0, 1.0, 1025)
    offsets = np.arange(-half_width + 1, half_width + 1)
    taps = _kaiser_sinc(offsets[None, :] - mu[:, None], half_width, beta)
    taps /= taps.sum(axis=1, keepdims=True)
    powers = np.vander(mu, degree + 1, increasing=True)
    coefficients, *_ = np.linalg.lstsq(powers, taps, rcond=None)
    return torch.from_numpy(coefficients.astype(np.float32))


def farrow_taps(coefficients: torch.Tensor, mu: float) -> torch.Tensor:
    """The ``2 * half_width`` interpolator taps at one fraction ``mu``."""
    powers = mu ** torch.arange(coefficients.shape[0], dtype=torch.float32)
    return (coefficients * powers[:, None]).sum(0)


# oneDNN runs a batch of one-channel rows through conv1d an order of magnitude slower than the same
# rows laid out as the channels of one depthwise convolution, so every FIR here is depthwise.


def _per_row(taps: torch.Tensor, rows: int, like: torch.Tensor) -> torch.Tensor:
    return taps.to(device=like.device, dtype=like.dtype).view(1, 1, -1).expand(rows, 1, -1).contiguous()


def fir(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Correlate every real row of ``x [N, n]`` with ``taps [K]``: ``y[n] = sum_j taps[j] x[n + j]``,
    ``[N, n - K + 1]``."""
    rows = x.shape[0]
    return F.conv1d(x.reshape(1, rows, -1), _per_row(taps, rows, x), groups=rows)[0]


def upsample_fir(x: torch.Tensor, taps: torch.Tensor, factor: int) -> torch.Tensor:
    """Zero-stuff every real row of ``x [N, n]`` by ``factor`` and convolve with ``taps [K]``:
    ``[N, (n - 1) * factor + K]``."""
    rows = x.shape[0]
    return F.conv_transpose1d(x.reshape(1, rows, -1), _per_row(taps, rows, x), stride=factor, groups=rows)[0]


def complex_rows(x: torch.Tensor) -> torch.Tensor:
    """complex ``[B, n]`` -> real ``[2B, n]`` with rows I0, Q0, I1, Q1, ..."""
    return torch.view_as_real(x).transpose(1, 2).reshape(2 * x.shape[0], -1)


def from_complex_rows(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_rows`."""
    pairs = x.view(-1, 2, x.shape[-1])
    return torch.complex(pairs[:, 0], pairs[:, 1])
