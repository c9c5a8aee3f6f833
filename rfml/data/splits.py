"""Seeded splits stratified by (class, SNR), and SNR filters, computed with batched torch ops.

Every (class, SNR) group is shuffled and cut by the same fractions, so each part keeps the dataset's mix.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["parse_snrs", "parse_split", "snr_mask", "stratified_split"]


def parse_split(spec: str | Sequence[float]) -> tuple[float, ...]:
    """Turn ``"6:2:2"``, ``"0.8:0.2"`` or a sequence of positive weights into fractions that sum to 1."""
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise ValueError("split must be colon-separated positive weights such as '6:2:2', got an empty string")
        try:
            weights = [float(part) for part in text.split(":")]
        except ValueError:
            raise ValueError(
                f"split must be colon-separated positive weights such as '6:2:2' or '0.8:0.2', got {spec!r}"
            ) from None
    else:
        try:
            weights = [float(w) for w in spec]
        except (TypeError, ValueError):
            raise ValueError(
                f"split must be a sequence of positive numbers such as (0.6, 0.2, 0.2), got {spec!r}"
            ) from None
    if not weights:
        raise ValueError("split must have at least one weight, got an empty sequence")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"split weights must all be positive finite numbers, got {spec!r}")
    total = math.fsum(weights)
    return tuple(w / total for w in weights)


def _check_labels(y: Tensor, snr: Tensor) -> None:
    for name, t in (("y", y), ("snr", snr)):
        if not isinstance(t, Tensor) or t.ndim != 1:
            raise ValueError(
                f"{name} must be a 1-D tensor, got {type(t).__name__} of shape {getattr(t, 'shape', None)}"
            )
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if y.shape != snr.shape:
        raise ValueError(f"y and snr must have the same length, got {y.numel()} and {snr.numel()}")


def stratified_split(
    y: Tensor, snr: Tensor, fractions: Sequence[float] | str = (0.6, 0.2, 0.2), seed: int = 0
) -> list[Tensor]:
    """Split example indices into parts that each hold the given fraction of every (class, SNR) group.

    A group of ``n`` examples is shuffled with a generator seeded by ``seed`` and cut at the boundaries
    ``floor(n * cumsum(fractions) + 1/2)`` (the last boundary is exactly ``n``), so part sizes sum to ``n``
    and 6:2:2 of 1000 gives 600/200/200 and of 715 gives 429/143/143. Tiny groups may leave a part empty.

    Args:
        y: int class index per example, shape [N].
        snr: int SNR (dB) per example, shape [N].
        fractions: positive weights, normalised by their sum (``(6, 2, 2)`` and ``"6:2:2"`` work too).
        seed: shuffling seed; the same seed and labels always give the same split.

    Returns:
        One ascending int64 index tensor per fraction, on ``y``'s device; together they cover ``0..N-1`` once.
    """
    _check_labels(y, snr)
    cum = torch.tensor(parse_split(fractions), dtype=torch.float64).cumsum(0)
    n = y.numel()
    device = y.device
    if n == 0:
        return [torch.empty(0, dtype=torch.int64, device=device) for _ in range(cum.numel())]

    # Group id from the dense ranks of class and SNR: a 1-D unique is far faster than torch.unique(dim=0) on
    # pairs, and dense ranks keep the combined key below N² whatever the label values are.
    _, y_rank = torch.unique(y, return_inverse=True)
    snr_values, snr_rank = torch.unique(snr, return_inverse=True)
    _, group, counts = torch.unique(y_rank * snr_values.numel() + snr_rank, return_inverse=True, return_counts=True)

    # A random permutation serves as tie-free random keys; a stable sort by group keeps that random order
    # inside each group, so the first k of a group in `order` are a uniform random k-subset of it.
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator).to(device)
    order = perm[torch.argsort(group[perm], stable=True)]
    sorted_group = group[order]
    starts = counts.cumsum(0) - counts
    rank = torch.arange(n, device=device) - starts[sorted_group]

    # Rounding cumulative boundaries (not per-part counts) makes the counts sum to n with no remainder step.
    bounds = torch.floor(counts.to(torch.float64).unsqueeze(1) * cum.to(device) + 0.5).to(torch.int64)
    bounds[:, -1] = counts
    part_sorted = (rank.unsqueeze(1) >= bounds[sorted_group, :-1]).sum(dim=1)

    part = torch.empty(n, dtype=torch.int64, device=device)
    part[order] = part_sorted
    # nonzero returns indices in ascending order, which is the sorted output promised above.
    return [torch.nonzero(part == k).squeeze(1) for k in range(cum.numel())]


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer SNR in dB, got {value!r}")
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer SNR in dB, got {value!r}") from None


def _parse_int(text: str, spec: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(
            f"snrs must be 'all', an integer, a comma list such as '0,10,18' or a range such as '-10:18' or "
            f"'-10:18:4', got {spec!r}"
        ) from None


def parse_snrs(spec: str | int | Sequence[int] | None) -> list[int] | None:
    """Parse an SNR selection into a sorted list of distinct dB values, or ``None`` for all SNRs.

    Accepts ``None``/``"all"``, an int, a sequence of ints, ``"10"``, ``"0,10,18"``, or an inclusive range
    ``"start:stop"`` (step 2 dB) / ``"start:stop:step"``; a range stops at the last grid point <= stop.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == "all":
            return None
        if not text:
            raise ValueError("snrs must not be an empty string; use 'all' or None to keep every SNR")
        if ":" in text:
            if "," in text:
                raise ValueError(
                    f"snrs must be either a comma list or a start:stop[:step] range, not both, got {spec!r}"
                )
            fields = [_parse_int(f, spec) for f in text.split(":")]
            if len(fields) not in (2, 3):
                raise ValueError(f"snrs range must be 'start:stop' or 'start:stop:step', got {spec!r}")
            start, stop = fields[0], fields[1]
            step = fields[2] if len(fields) == 3 else 2
            if step <= 0:
                raise ValueError(f"snrs range step must be a positive integer, got {step} in {spec!r}")
            if stop < start:
                raise ValueError(f"snrs range must have start <= stop, got {spec!r}")
            return list(range(start, stop + 1, step))
        return sorted({_parse_int(f, spec) for f in text.split(",")})
    if isinstance(spec, Tensor):
        spec = spec.reshape(-1).tolist()
    if isinstance(spec, Iterable):
        values = sorted({_as_int(v, "each snr") for v in spec})
        if not values:
            raise ValueError("snrs must name at least one SNR, got an empty sequence; use None to keep every SNR")
        return values
    return [_as_int(spec, "snrs")]


def snr_mask(snr: Tensor, keep: Iterable[int] | None) -> Tensor:
    """Boolean mask, shaped like ``snr``, that is True where the SNR is in ``keep`` (``None`` keeps all)."""
    if not isinstance(snr, Tensor) or snr.is_floating_point() or snr.is_complex() or snr.dtype == torch.bool:
        raise ValueError(f"snr must be an integer tensor, got {getattr(snr, 'dtype', type(snr).__name__)}")
    if keep is None:
        return torch.ones_like(snr, dtype=torch.bool)
    if isinstance(keep, str):
        raise ValueError(f"keep must be integers, got the string {keep!r}; parse it with parse_snrs first")
    values = keep.reshape(-1).tolist() if isinstance(keep, Tensor) else list(keep)
    if not values:
        raise ValueError("keep must name at least one SNR, got an empty collection; use None to keep every SNR")
    wanted = torch.tensor([_as_int(v, "each keep value") for v in values], dtype=snr.dtype, device=snr.device)
    return torch.isin(snr, wanted)
