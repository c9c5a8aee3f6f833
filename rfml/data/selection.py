"""Band selection and sample selection of frequency components (Zhang et al., SPAWC 2019, arXiv 1905.08054).

The 2.4 GHz ISM frames are L = 128 complex samples at 10 MS/s from a 10 MHz window centred at 2426.5 MHz.
After a frequency-domain view (``fft_iq`` or ``fft_amp_phase`` from :mod:`rfml.data.views`, fftshifted so DC
is at index L // 2), bin ``k`` sits at ``centre_mhz + (k - L // 2) · fs / L / 1e6`` MHz, 78.125 kHz apart.

* :class:`BandSelect` keeps the bins inside a few sub-bands (the paper's "4 MHz, 52 bins" and "2 MHz, 26 bins"),
  and :func:`visible_classes` says which classes still overlap what is kept.
* :class:`SampleSelect` keeps L // rate of the L components of an ``fft_amp_phase`` batch (uniform, random,
  largest mean amplitude, or the leading principal components of each row).
* :class:`Pipeline` chains views and selections.

Every callable takes a batch shaped [B, 2, L] and returns [B, 2, K]; all are batched tensor code.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rfml.data.views import check_batch

__all__ = [
    "METHODS",
    "BandSelect",
    "Pipeline",
    "SampleSelect",
    "band_bins",
    "bin_frequencies_mhz",
    "visible_classes",
]

METHODS: tuple[str, ...] = ("uniform", "random", "magnitude", "pca")

# Tolerance in MHz for comparing bin centres and band / class edges.
FREQ_TOL_MHZ = 1e-9

Batch = Tensor | Mapping[str, Tensor] | Sequence[Tensor]


def _check_length(length: Any, name: str = "length") -> int:
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"{name} must be a positive int, got {length!r}")
    return length


def _check_number(value: Any, name: str, positive: bool = False) -> float:
    """``value`` as a finite float (and > 0 when ``positive``); otherwise ``ValueError`` naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (positive and number <= 0):
        raise ValueError(f"{name} must be a {'positive ' if positive else ''}finite number, got {value!r}")
    return number


def _check_ranges(ranges: Any, name: str) -> list[tuple[float, float]]:
    """Validate a sequence of (lo, hi) pairs in MHz with lo < hi; returns them as float tuples."""
    if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Sequence) or len(ranges) == 0:
        raise ValueError(f"{name} must be a non-empty list of (lo_mhz, hi_mhz) pairs, got {ranges!r}")
    out = []
    for i, pair in enumerate(ranges):
        try:
            lo, hi = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}] must be a (lo_mhz, hi_mhz) pair of numbers, got {pair!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{name}[{i}] = {pair!r} must have finite lo < hi (MHz)")
        out.append((lo, hi))
    return out


def _check_batch(x: Any, length: int, who: str) -> None:
    check_batch(x)
    if x.shape[2] != length:
        raise ValueError(f"{who} was built for length={length}, but x has L={x.shape[2]} (shape {tuple(x.shape)})")


def _batch_x(item: Batch) -> Tensor:
    return item if isinstance(item, Tensor) else item["x"] if isinstance(item, Mapping) else item[0]


def bin_frequencies_mhz(length: int = 128, sample_rate_hz: float = 10e6, centre_mhz: float = 2426.5) -> Tensor:
    """RF frequency in MHz (float64, [L]) of each fftshifted bin: ``centre_mhz + (k - L // 2) · fs / L / 1e6``."""
    length = _check_length(length)
    fs = _check_number(sample_rate_hz, "sample_rate_hz", positive=True)
    centre = _check_number(centre_mhz, "centre_mhz")
    k = torch.arange(length, dtype=torch.float64)
    return centre + (k - length // 2) * (fs / length / 1e6)


def _window(sample_rate_hz: float, centre_mhz: float) -> tuple[float, float]:
    half = sample_rate_hz / 2 / 1e6
    return centre_mhz - half, centre_mhz + half


def band_bins(
    bands: Sequence[tuple[float, float]],
    length: int = 128,
    sample_rate_hz: float = 10e6,
    centre_mhz: float = 2426.5,
) -> Tensor:
    """Ascending indices (int64) of the fftshifted bins whose centre lies in any closed band [lo, hi] (MHz).

    Bands must lie inside the sampled window [centre - fs/2, centre + fs/2] and must not overlap (touching at
    an edge is allowed); the comparison uses a tolerance of ``FREQ_TOL_MHZ``. With the defaults,
    ``[(2422, 2424), (2429, 2431)]`` gives 52 bins (7..32 and 96..121) and ``[(2429, 2431)]`` gives 26.
    """
    checked = _check_ranges(bands, "bands")
    freqs = bin_frequencies_mhz(length, sample_rate_hz, centre_mhz)
    w_lo, w_hi = _window(float(sample_rate_hz), float(centre_mhz))
    window = f"the sampled window [{w_lo:g}, {w_hi:g}] MHz ({float(centre_mhz):g} MHz ± {sample_rate_hz / 2e6:g} MHz)"
    for lo, hi in checked:
        if lo < w_lo - FREQ_TOL_MHZ or hi > w_hi + FREQ_TOL_MHZ:
            raise ValueError(f"band ({lo:g}, {hi:g}) MHz is not inside {window}")
    ordered = sorted(checked)
    for (lo_a, hi_a), (lo_b, hi_b) in itertools.pairwise(ordered):
        if lo_b < hi_a - FREQ_TOL_MHZ:
            raise ValueError(f"bands ({lo_a:g}, {hi_a:g}) and ({lo_b:g}, {hi_b:g}) MHz overlap")
    edges = torch.tensor(checked, dtype=torch.float64)  # [n_bands, 2]
    inside = (freqs[:, None] >= edges[:, 0] - FREQ_TOL_MHZ) & (freqs[:, None] <= edges[:, 1] + FREQ_TOL_MHZ)
    bins = inside.any(dim=1).nonzero().flatten()
    if bins.numel() == 0:
        raise ValueError(
            f"bands {checked} select no bins of {window}; bins are {float(sample_rate_hz) / length / 1e3:g} kHz apart"
        )
    return bins


def visible_classes(bands: Sequence[tuple[float, float]], class_ranges: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the classes whose occupied range (lo, hi) in MHz overlaps some band by a positive length.

    Touching at an edge does not count (an overlap must exceed ``FREQ_TOL_MHZ``).
    """
    checked_bands = _check_ranges(bands, "bands")
    checked_classes = _check_ranges(class_ranges, "class_ranges")
    b = torch.tensor(checked_bands, dtype=torch.float64)  # [n_bands, 2]
    c = torch.tensor(checked_classes, dtype=torch.float64)  # [n_classes, 2]
    overlap = torch.minimum(c[:, None, 1], b[None, :, 1]) - torch.maximum(c[:, None, 0], b[None, :, 0])
    return (overlap > FREQ_TOL_MHZ).any(dim=1).nonzero().flatten().tolist()


class BandSelect:
    """Keep the bins of a frequency-domain view ([B, 2, L] → [B, 2, K]) that lie inside ``bands`` (MHz).

    ``bins`` holds the kept indices (see :func:`band_bins`), ``output_length`` their count. Both rows of the
    view (real/imag or amplitude/phase) are indexed alike. Needs no fitting.
    """

    def __init__(
        self,
        bands: Sequence[tuple[float, float]],
        length: int = 128,
        sample_rate_hz: float = 10e6,
        centre_mhz: float = 2426.5,
    ) -> None:
        self.bins = band_bins(bands, length, sample_rate_hz, centre_mhz)
        self.bands = _check_ranges(bands, "bands")
        self.length = length
        self.sample_rate_hz = float(sample_rate_hz)
        self.centre_mhz = float(centre_mhz)

    @property
    def output_length(self) -> int:
        return int(self.bins.numel())

    @property
    def fitted(self) -> bool:
        return True

    def fit(self, batches: Iterable[Batch]) -> BandSelect:
        """No statistics to fit; checks the batches' shape and returns ``self``."""
        for item in batches:
            _check_batch(_batch_x(item), self.length, repr(self))
        return self

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x, self.length, repr(self))
        return x.index_select(-1, self.bins.to(x.device))

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (lists, floats, int) that can go into any checkpoint or JSON."""
        return {
            "bands": [list(band) for band in self.bands],
            "length": self.length,
            "sample_rate_hz": self.sample_rate_hz,
            "centre_mhz": self.centre_mhz,
            "bins": self.bins.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> BandSelect:
        """Check :meth:`state_dict` output against this selection (same bands, window and bins); returns ``self``."""
        missing = {"bands", "length", "sample_rate_hz", "centre_mhz", "bins"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        mine = self.state_dict()
        theirs = {
            "bands": [[float(v) for v in band] for band in state["bands"]],
            "length": state["length"],
            "sample_rate_hz": float(state["sample_rate_hz"]),
            "centre_mhz": float(state["centre_mhz"]),
            "bins": [int(v) for v in state["bins"]],
        }
        if theirs != mine:
            raise ValueError(f"state is for {theirs}, not for {self!r}")
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> BandSelect:
        """Build a band selection from :meth:`state_dict` output (the stored bins are checked, not trusted)."""
        missing = {"bands", "length", "sample_rate_hz", "centre_mhz", "bins"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        bands = [tuple(band) for band in state["bands"]]
        select = cls(bands, state["length"], state["sample_rate_hz"], state["centre_mhz"])
        return select.load_state_dict(state)

    def __repr__(self) -> str:
        bands = [(round(lo, 6), round(hi, 6)) for lo, hi in self.bands]
        return (
            f"BandSelect(bands={bands}, length={self.length}, sample_rate_hz={self.sample_rate_hz:g}, "
            f"centre_mhz={self.centre_mhz:g}, output_length={self.output_length})"
        )


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _check_sample_rate(rate: Any, length: int) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1 or length % rate != 0:
        divisors = [d for d in range(1, length + 1) if length % d == 0]
        raise ValueError(f"rate must be an int dividing length={length} (one of {divisors}), got {rate!r}")
    return rate


class SampleSelect:
    """Keep ``L // rate`` of the ``L`` frequency components of an ``fft_amp_phase`` batch ([B, 2, L] → [B, 2, K]).

    Methods (``METHODS``):

    * ``"uniform"``: every ``rate``-th bin, on the grid ``offset + rate·i`` with ``offset = (L // 2) % rate``, so
      the DC bin ``L // 2`` is always kept (for L = 128 and rate ≤ 64 the offset is 0: bins 0, rate, 2·rate, …).
    * ``"random"``: a fixed subset of ``K`` bins drawn by ``torch.randperm`` with a ``torch.Generator`` seeded by
      ``seed``, sorted ascending.
    * ``"magnitude"``: the ``K`` bins of largest mean amplitude (row 0) over the data given to :meth:`fit`, sorted
      ascending (ties go to the lower bin).
    * ``"pca"``: for each row separately (amplitude, phase), the mean ``mean[c]`` ([L]) and the top ``K`` principal
      directions ``components[c]`` ([L, K], orthonormal columns in decreasing variance order) of the data given
      to :meth:`fit`; output row ``c`` is ``(x[:, c] - mean[c]) @ components[c]``. Each direction's sign is fixed
      so that its largest-magnitude entry is positive. The covariance uses the unbiased (N - 1) denominator.

    The three bin-picking methods (``bins`` is then set) index both rows alike; ``pca`` has ``bins = None``.
    """

    def __init__(self, method: str, rate: int, length: int = 128, seed: int = 0) -> None:
        self.method = _check_method(method)
        self.length = _check_length(length)
        self.rate = _check_sample_rate(rate, self.length)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
        """Drop fitted statistics; the data-free methods get their fixed bins back."""
        self.bins: Tensor | None = None
        self.amplitude_mean: Tensor | None = None  # [L] float64, magnitude only
        self.mean: Tensor | None = None  # [2, L] float64, pca only
        self.components: Tensor | None = None  # [2, L, K] float64, pca only
        self.explained_variance: Tensor | None = None  # [2, K] float64, pca only
        self.total_variance: Tensor | None = None  # [2] float64, pca only
        self.fitted = False
        if self.method == "uniform":
            offset = (self.length // 2) % self.rate
            self.bins = torch.arange(offset, self.length, self.rate, dtype=torch.int64)
            self.fitted = True
        elif self.method == "random":
            generator = torch.Generator().manual_seed(self.seed)
            self.bins = torch.randperm(self.length, generator=generator)[: self.output_length].sort().values
            self.fitted = True

    @property
    def output_length(self) -> int:
        return self.length // self.rate

    @property
    def explained_variance_ratio(self) -> Tensor:
        """Fraction of each row's total variance carried by each kept component, [2, K] float64 (pca only)."""
        if self.method != "pca":
            raise ValueError(f"explained_variance_ratio is only defined for method='pca', not {self.method!r}")
        self._require_fitted()
        assert self.explained_variance is not None and self.total_variance is not None
        return self.explained_variance / self.total_variance.clamp_min(torch.finfo(torch.float64).tiny)[:, None]

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(
                f"{self!r} is not fitted; call .fit(batches) on the training split before using method={self.method!r}"
            )

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x, self.length, repr(self))
        self._require_fitted()
        if self.method != "pca":
            assert self.bins is not None
            return x.index_select(-1, self.bins.to(x.device))
        assert self.mean is not None and self.components is not None
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        components = self.components.to(device=x.device, dtype=x.dtype)
        return torch.einsum("bcl,clk->bck", x - mean, components)

    def fit(self, batches: Iterable[Batch]) -> SampleSelect:
        """Fit on training batches ([B, 2, L] tensors, dicts with ``"x"``, or tuples led by x); returns ``self``.

        ``uniform`` and ``random`` learn nothing, but the batches are still checked. ``pca`` accumulates, in
        float64, the sum and the sum of outer products of each row (shifted by the first batch's mean, which
        keeps the covariance formula accurate when the mean is large) and needs at least two examples.
        """
        count = 0
        shift: Tensor | None = None
        total = torch.zeros(2, self.length, dtype=torch.float64)
        outer = torch.zeros(2, self.length, self.length, dtype=torch.float64) if self.method == "pca" else None
        for item in batches:
            x = _batch_x(item)
            _check_batch(x, self.length, repr(self))
            if x.shape[0] == 0:
                continue
            count += x.shape[0]
            if self.method in ("uniform", "random"):
                continue
            xd = x.detach().to(torch.float64)
            if self.method == "magnitude":
                total[0] += xd[:, 0].sum(dim=0).cpu()
                continue
            if shift is None:
                shift = xd.mean(dim=0).cpu()
            d = xd - shift.to(xd.device)
            total += d.sum(dim=0).cpu()
            assert outer is not None
            outer += torch.einsum("bcl,bcm->clm", d, d).cpu()
        if count == 0:
            raise ValueError("batches must contain at least one non-empty [B, 2, L] batch to fit on")
        if self.method == "magnitude":
            amplitude_mean = total[0] / count
            order = torch.argsort(amplitude_mean, descending=True, stable=True)
            self.amplitude_mean = amplitude_mean
            self.bins = order[: self.output_length].sort().values
        elif self.method == "pca":
            if count < 2:
                raise ValueError(f"method='pca' needs at least 2 training examples to fit a covariance, got {count}")
            assert shift is not None and outer is not None
            mean_d = total / count  # [2, L]
            cov = (outer - count * mean_d[:, :, None] * mean_d[:, None, :]) / (count - 1)
            cov = (cov + cov.transpose(1, 2)) / 2
            self._set_pca(shift + mean_d, cov)
        self.fitted = True
        return self

    def _set_pca(self, mean: Tensor, cov: Tensor) -> None:
        eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
        k = self.output_length
        eigvals = eigvals.flip(-1)[:, :k].clamp_min(0.0)
        eigvecs = eigvecs.flip(-1)[:, :, :k]  # [2, L, K]
        # Make each direction's largest-|.| entry positive, so the result does not depend on the solver.
        peak = eigvecs.abs().argmax(dim=1, keepdim=True)  # [2, 1, K]
        signs = torch.sign(eigvecs.gather(1, peak))
        signs[signs == 0] = 1.0
        # Contiguous copies, so a checkpoint round trip (which rebuilds them contiguous) gives bit-identical outputs.
        self.mean = mean.contiguous()
        self.components = (eigvecs * signs).contiguous()
        self.explained_variance = eigvals.contiguous()
        self.total_variance = torch.diagonal(cov, dim1=1, dim2=2).sum(dim=1).clamp_min(0.0)

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (str, int, bool, lists of numbers) for a Lightning checkpoint or JSON.

        Keys that do not apply to the method (or are not fitted yet) hold empty lists.
        """

        def as_list(t: Tensor | None) -> list[Any]:
            return [] if t is None else t.tolist()

        return {
            "method": self.method,
            "rate": self.rate,
            "length": self.length,
            "seed": self.seed,
            "fitted": self.fitted,
            "bins": as_list(self.bins),
            "amplitude_mean": as_list(self.amplitude_mean),
            "mean": as_list(self.mean),
            "components": as_list(self.components),
            "explained_variance": as_list(self.explained_variance),
            "total_variance": as_list(self.total_variance),
        }

    _STATE_KEYS = frozenset(
        {"method", "rate", "length", "seed", "fitted", "bins", "amplitude_mean", "mean", "components"}
        | {"explained_variance", "total_variance"}
    )

    def load_state_dict(self, state: Mapping[str, Any]) -> SampleSelect:
        """Restore :meth:`state_dict` output; method, rate, length and seed must match. Returns ``self``."""
        missing = self._STATE_KEYS - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        config = (state["method"], state["rate"], state["length"], state["seed"])
        if config != (self.method, self.rate, self.length, self.seed):
            raise ValueError(
                f"state is for SampleSelect(method={config[0]!r}, rate={config[1]!r}, length={config[2]!r}, "
                f"seed={config[3]!r}), not {self!r}"
            )
        fitted = bool(state["fitted"])
        if self.method in ("uniform", "random"):
            assert self.bins is not None
            if [int(v) for v in state["bins"]] != self.bins.tolist():
                raise ValueError(f"state bins {state['bins']} differ from the bins of {self!r}")
            return self
        if not fitted:
            self._reset()
            return self
        k, n = self.output_length, self.length
        if self.method == "magnitude":
            bins = torch.as_tensor(state["bins"], dtype=torch.int64)
            amplitude_mean = torch.as_tensor(state["amplitude_mean"], dtype=torch.float64)
            if bins.shape != (k,) or amplitude_mean.shape != (n,):
                raise ValueError(
                    f"state bins must have {k} entries and amplitude_mean {n}, "
                    f"got {list(bins.shape)} and {list(amplitude_mean.shape)}"
                )
            if bins.numel() and (bins.min() < 0 or bins.max() >= n or not bool((bins.diff() > 0).all())):
                raise ValueError(f"state bins must be ascending distinct indices in [0, {n}), got {state['bins']}")
            self.bins, self.amplitude_mean = bins, amplitude_mean
        else:
            mean = torch.as_tensor(state["mean"], dtype=torch.float64)
            components = torch.as_tensor(state["components"], dtype=torch.float64)
            explained = torch.as_tensor(state["explained_variance"], dtype=torch.float64)
            total = torch.as_tensor(state["total_variance"], dtype=torch.float64)
            shapes = (mean.shape, components.shape, explained.shape, total.shape)
            if shapes != ((2, n), (2, n, k), (2, k), (2,)):
                raise ValueError(
                    f"state mean, components, explained_variance and total_variance must be shaped "
                    f"[2, {n}], [2, {n}, {k}], [2, {k}] and [2], got {[list(s) for s in shapes]}"
                )
            if not all(torch.isfinite(t).all() for t in (mean, components, explained, total)):
                raise ValueError("state pca statistics must be finite")
            self.mean, self.components = mean, components
            self.explained_variance, self.total_variance = explained, total
        self.fitted = True
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> SampleSelect:
        """Build a sample selection from :meth:`state_dict` output."""
        missing = {"method", "rate", "length", "seed"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        select = cls(state["method"], state["rate"], state["length"], state["seed"])
        return select.load_state_dict(state)

    def __repr__(self) -> str:
        seed = f", seed={self.seed}" if self.method == "random" else ""
        return (
            f"SampleSelect(method={self.method!r}, rate={self.rate}, length={self.length}{seed}, "
            f"output_length={self.output_length}, fitted={self.fitted})"
        )


class Pipeline:
    """Apply ``steps`` (views, :class:`BandSelect`, :class:`SampleSelect` or any callables) in order.

    Fitting is left to the caller: fit each stateful step on the training split's output of the steps before
    it. A pipeline is picklable when its steps are.
    """

    def __init__(self, *steps: Callable[[Tensor], Tensor]) -> None:
        for i, step in enumerate(steps):
            if not callable(step):
                raise ValueError(f"step {i} must be callable (a View, BandSelect, SampleSelect, ...), got {step!r}")
        self.steps: tuple[Callable[[Tensor], Tensor], ...] = tuple(steps)

    def __call__(self, x: Tensor) -> Tensor:
        for step in self.steps:
            x = step(x)
        return x

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(repr(step) for step in self.steps)})"
