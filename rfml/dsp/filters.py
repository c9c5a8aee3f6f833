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


def _kaiser_sinc(t: np.ndarray, window_half_width: float, beta: float) -> np.ndarray:
    inside = np.clip(1.0 - (t / window_half_width) ** 2, 0.0, None)
    return np.sinc(t) * np.i0(beta * np.sqrt(inside)) / np.i0(beta) * (np.abs(t) < window_half_width)


def farrow_coefficients(
    half_width: int = 6, degree: int = 5, span: float = 0.6, window_half_width: float = 6.6, beta: float = 8.0
) -> torch.Tensor:
    """Farrow interpolator ``C [degree + 1, 2 * half_width + 1]`` float64.

    ``x(k + mu) = sum_j taps_j(mu) x[k - half_width + j]`` with ``taps_j(mu) = sum_d C[d, j] mu**d``,
    a Kaiser-windowed sinc fitted for ``|mu| <= span``. The defaults keep the error below -64 dB up
    to 0.25 cycles/sample and below -58 dB to 0.3.
    """
    mu = np.linspace(-span, span, 1201)
    offsets = np.arange(-half_width, half_width + 1)
    taps = _kaiser_sinc(offsets[None, :] - mu[:, None], window_half_width, beta)
    taps /= taps.sum(axis=1, keepdims=True)
    coefficients, *_ = np.linalg.lstsq(np.vander(mu, degree + 1, increasing=True), taps, rcond=None)
    return torch.from_numpy(coefficients)


def taylor_taps(coefficients: torch.Tensor, mu: torch.Tensor, terms: int) -> torch.Tensor:
    """Re-centre a Farrow interpolator at per-row fractions ``mu [R]``: ``[R, terms, taps]`` with
    ``taps(mu + delta) = sum_k delta**k T_k(mu)``, ``T_k = sum_d C[d] binom(d, k) mu**(d - k)``.

    Exact when ``terms = degree + 1``; fewer terms drop the ``delta**k`` tail. Basic arithmetic only
    (Horner), so every row gets the same bits wherever it sits in the batch.
    """
    degree = coefficients.shape[0] - 1
    mu = mu.to(torch.float64)[:, None]
    out = []
    for k in range(terms):
        weights = [math.comb(d, k) * coefficients[d].to(mu.device) for d in range(k, degree + 1)]
        term = weights[-1].expand(mu.shape[0], -1)
        for w in reversed(weights[:-1]):
            term = term * mu + w
        out.append(term)
    return torch.stack(out, dim=1).float()


def farrow_taps(coefficients: torch.Tensor, mu: float) -> torch.Tensor:
    """The ``2 * half_width + 1`` interpolator taps at one fraction ``mu``."""
    return taylor_taps(coefficients, torch.tensor([mu]), 1)[0, 0]


# oneDNN runs a batch of one-channel rows through conv1d an order of magnitude slower than the same
# rows laid out as the channels of one depthwise convolution, so every FIR here is depthwise.


def _per_row(taps: torch.Tensor, rows: int, like: torch.Tensor) -> torch.Tensor:
    return taps.to(device=like.device, dtype=like.dtype).view(1, 1, -1).expand(rows, 1, -1).contiguous()


def fir(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Correlate every real row of ``x [N, n]`` with ``taps``: ``y[n] = sum_j taps[j] x[n + j]``,
    ``[N, n - K + 1]``. ``taps`` is ``[K]`` (shared) or ``[N, K]`` (one filter per row)."""
    rows = x.shape[0]
    weight = _per_row(taps, rows, x) if taps.ndim == 1 else taps.to(x.device, x.dtype).reshape(rows, 1, -1)
    return F.conv1d(x.reshape(1, rows, -1), weight, groups=rows)[0]


def upsample_fir(x: torch.Tensor, taps: torch.Tensor, factor: int) -> torch.Tensor:
    """Zero-stuff every real row of ``x [N, n]`` by ``factor`` and convolve with ``taps [K]``:
    ``[N, (n - 1) * factor + K]``."""
    rows = x.shape[0]
    return F.conv_transpose1d(x.reshape(1, rows, -1), _per_row(taps, rows, x), stride=factor, groups=rows)[0]
