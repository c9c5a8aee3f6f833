"""The Synthesizer: a seeded, batched generator of labelled RF examples.

Example ``i`` is a pure function of ``(seed, i)``: its class is ``classes[i % C]``, its SNR is
``snrs[(i // C) % S]`` (so any ``C * S`` consecutive indices hold every (class, SNR) pair once), and
all its random numbers come from counter-based hashes of its own key (see :mod:`rfml.dsp.rng`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from rfml.dsp import rng
from rfml.dsp.channel import ChannelConfig, apply_channel, channel_preset
from rfml.dsp.modulate import MODULATIONS, modulate_classes

CLASSES_RML2016A: list[str] = [
    "8PSK", "AM-DSB", "AM-SSB", "BPSK", "CPFSK", "GFSK", "PAM4", "QAM16", "QAM64", "QPSK", "WBFM",
]  # fmt: skip
CLASSES_RML2016B: list[str] = [c for c in CLASSES_RML2016A if c != "AM-SSB"]
CLASSES_RML2018A: list[str] = [
    "OOK", "4ASK", "8ASK", "BPSK", "QPSK", "8PSK", "16PSK", "32PSK", "16APSK", "32APSK", "64APSK",
    "128APSK", "16QAM", "32QAM", "64QAM", "128QAM", "256QAM", "AM-SSB-WC", "AM-SSB-SC", "AM-DSB-WC",
    "AM-DSB-SC", "FM", "GMSK", "OQPSK",
]  # fmt: skip
CLASS_SETS: dict[str, list[str]] = {
    "rml2016.10a": CLASSES_RML2016A,
    "rml2016.10b": CLASSES_RML2016B,
    "rml2018.01a": CLASSES_RML2018A,
}


SNR_DB_RANGE: tuple[float, float] = (-100.0, 100.0)
"""The SNRs (dB) a synthesizer accepts, ends included.

The noise of a unit-power frame is scaled by ``exp(-snr * ln(10) / 10)`` in float32 (the noise variance, or in
the ``gnuradio`` convention the noise standard deviation), which overflows to ``inf`` near -385 dB; the
``gnuradio`` convention's L1 normalisation already loses the signal to underflow (all-zero frames) near -380 dB.
The label is the SNR rounded to an int64, which wraps beyond 2**63 (``1e30`` became INT64_MIN). [-100, 100] dB
leaves a wide margin (the published sets span -20 to 30 dB) and keeps every whole-dB label exact in float32;
``tests/test_hardening_synth_log.py`` checks that both ends give finite, non-zero frames and exact labels on every
channel preset and in :class:`rfml.dsp.ism.ISMSynthesizer`.
"""


def snr_db_value(value: object, name: str) -> float:
    """``value`` as a float SNR in dB, refused (``ValueError`` naming ``name``) unless it is a finite number within
    :data:`SNR_DB_RANGE`. Every SNR a synthesizer uses passes here: the ``snrs`` grid and the ``snr_db`` override."""
    low, high = SNR_DB_RANGE
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number of dB in [{low:g}, {high:g}] dB, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number of dB (not NaN or infinite), got {value!r}")
    if not low <= number <= high:
        raise ValueError(
            f"{name} must be an SNR in [{low:g}, {high:g}] dB (beyond it the float32 noise overflows or the int64 "
            f"label is no longer exact), got {value!r}"
        )
    return number


class Synthesizer:
    """Batched RF example generator.

    ``chunk_samples`` (class attribute) bounds the complex samples processed at once; it changes
    speed and memory only, never the output.

    Args:
        classes: class names (any of :data:`rfml.dsp.modulate.MODULATIONS`) or a class-set name
            (``"rml2016.10a"``, ``"rml2016.10b"``, ``"rml2018.01a"``).
        length: complex samples per example.
        samples_per_symbol: oversampling of the digital modulations (>= 2).
        channel: a preset name (``clean``, ``rml2016``, ``rml2016-compat``, ``wireless``) or a
            :class:`~rfml.dsp.channel.ChannelConfig`.
        snrs: the SNRs (dB) cycled through by index, each within :data:`SNR_DB_RANGE`; see
            :mod:`rfml.dsp.channel` for the definition.
        seed: the dataset seed, an integer in ``[0, 2**64)`` (see :func:`rfml.dsp.rng.check_seed`).
        rolloff: root-raised-cosine roll-off of the linear modulations.
    """

    chunk_samples = 1 << 20

    def __init__(
        self,
        classes: str | Sequence[str],
        length: int,
        samples_per_symbol: int = 8,
        channel: str | ChannelConfig = "rml2016",
        snrs: Iterable[float] = range(-20, 20, 2),
        seed: int = 0,
        rolloff: float = 0.35,
    ) -> None:
        if isinstance(classes, str):
            if classes not in CLASS_SETS:
                raise ValueError(
                    f"classes must be a list of class names or one of {sorted(CLASS_SETS)}, got {classes!r}"
                )
            classes = CLASS_SETS[classes]
        classes = list(classes)
        unknown = [c for c in classes if c not in MODULATIONS]
        if unknown or not classes:
            raise ValueError(
                f"classes contains unknown names {unknown}; allowed: {sorted(MODULATIONS)}"
                if unknown
                else f"classes must not be empty; allowed: {sorted(MODULATIONS)}"
            )
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValueError(f"length must be a positive integer number of samples, got {length!r}")
        if isinstance(samples_per_symbol, bool) or not isinstance(samples_per_symbol, int) or samples_per_symbol < 2:
            raise ValueError(f"samples_per_symbol must be an integer >= 2, got {samples_per_symbol!r}")
        snr_list = [snr_db_value(s, "snrs") for s in snrs]
        if not snr_list:
            raise ValueError("snrs must hold at least one finite SNR in dB, got an empty sequence")
        if not 0.0 < rolloff <= 1.0:
            raise ValueError(f"rolloff must be in (0, 1], got {rolloff!r}")
        self.classes: list[str] = classes
        self.length = length
        self.samples_per_symbol = samples_per_symbol
        self.channel: ChannelConfig = channel if isinstance(channel, ChannelConfig) else channel_preset(channel)
        self.snrs: list[float] = snr_list
        self.seed = rng.check_seed(seed)
        self.rolloff = float(rolloff)
        self._modulations = [MODULATIONS[name] for name in self.classes]
        self._input_length = self.channel.input_length(length, timing_span=samples_per_symbol)

    def __repr__(self) -> str:
        return (
            f"Synthesizer(classes={len(self.classes)} classes, length={self.length}, "
            f"samples_per_symbol={self.samples_per_symbol}, snrs={self.snrs[0]:g}..{self.snrs[-1]:g} dB "
            f"({len(self.snrs)}), seed={self.seed})"
        )

    def snr_index(self, indices: torch.Tensor) -> torch.Tensor:
        """Position in ``snrs`` of each example index's SNR."""
        return (indices // len(self.classes)) % len(self.snrs)

    def labels(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class index and SNR (dB, as float) of each example index."""
        snr_table = torch.tensor(self.snrs, dtype=torch.float32, device=indices.device)
        return indices % len(self.classes), snr_table[self.snr_index(indices)]

    @torch.no_grad()
    def generate(
        self,
        indices: Sequence[int] | torch.Tensor,
        snr_db: float | None = None,
        return_clean: bool = False,
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Generate the examples ``indices``.

        Returns ``{"x": float32 [B, 2, L], "y": int64 [B], "snr": int64 [B]}`` and ``"clean"``
        (the same examples before noise) when ``return_clean``. ``indices`` must be integers >= 0 (an
        integer dtype: floats and bools are refused, see :func:`rfml.dsp.rng.example_indices`).
        ``snr_db`` overrides every row's SNR and must lie within :data:`SNR_DB_RANGE`; the label is the
        value rounded to whole dB.
        """
        idx = rng.example_indices(indices, device)
        y, snr = self.labels(idx)
        if snr_db is not None:
            snr = torch.full_like(snr, snr_db_value(snr_db, "snr_db"))
        keys = rng.example_keys(self.seed, idx)

        x = torch.empty(idx.numel(), 2, self.length, device=idx.device)
        clean = torch.empty_like(x) if return_clean else None
        # Work in row chunks that bound the intermediate tensors; rows are independent.
        rows = max(1, self.chunk_samples // self.length)
        for first in range(0, idx.numel(), rows):
            part = slice(first, first + rows)
            x[part], clean_part = self._synthesize(keys[part], y[part], snr[part])
            if clean is not None:
                clean[part] = clean_part
        out = {"x": x, "y": y, "snr": torch.round(snr).to(torch.int64)}
        if clean is not None:
            out["clean"] = clean
        return out

    def _synthesize(self, keys: torch.Tensor, y: torch.Tensor, snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        signal = modulate_classes(keys, y, self._modulations, self._input_length, self.samples_per_symbol, self.rolloff)
        return apply_channel(signal, keys, self.length, snr, self.channel)
