"""TorchSig 2.2 narrowband generation throughput (samples/s), for comparison with rfml.

Measures how many narrowband examples per second TorchSig 2.2 synthesises in a
single process with ``torch.set_num_threads(2)``: one signal per example,
impairment level 2 ("wireless": TX hardware impairments + fading channel on the
burst, RX hardware impairments + ML augmentations on the whole example), IQ
output (``ComplexTo2D``, shape ``(2, length)``) with a ``class_index`` label.

The dataset is built with TorchSig's public API the way its own
``narrowband_impaired_*_all`` configs are generated: ``TorchSigDefaults``
metadata overridden with the narrowband fields (``num_iq_samples_dataset`` =
length, one signal, burst duration 0.8-1.0 x length, 64-point FFT), an
``Impairments(level)`` pair of transforms, and ``TorchSigIterableDataset`` over
the ``"all"`` signal generators (69 classes in 2.2.0) sampled uniformly. Each length gets a
fresh dataset, a short warm-up (numba JIT, caches), then ``--num-samples``
calls to ``next()`` timed with ``time.perf_counter``.

Run inside the separate TorchSig venv (see ``benchmarks/torchsig_env.sh``) with
the torchaudio stand-in on the path::

    bash benchmarks/torchsig_env.sh
    PYTHONPATH=benchmarks/torchsig_standin .venv-torchsig/bin/python benchmarks/torchsig_throughput.py

(defaults: ``--lengths 128 1024 --num-samples 500 --impairment-level 2``).
Prints one line of JSON on stdout. On a 2-core machine the 1024 figure is
sensitive to other CPU load (torch's OpenMP workers spin-wait between the small
``torch.stft`` calls); run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

try:
    import torchaudio  # noqa: F401  (TorchSig imports it; make a missing stand-in obvious)
except ImportError as error:  # pragma: no cover - environment guard
    raise SystemExit("torchaudio not importable: run with PYTHONPATH=benchmarks/torchsig_standin") from error

import torchsig
from torchsig.datasets.datasets import TorchSigIterableDataset
from torchsig.transforms.impairments import Impairments
from torchsig.transforms.transforms import ComplexTo2D
from torchsig.utils.defaults import TorchSigDefaults


def narrowband_metadata(num_iq_samples: int) -> dict[str, Any]:
    """Return TorchSig dataset metadata for a narrowband example of ``num_iq_samples``.

    Field values follow TorchSig's ``narrowband_impaired_train_all`` config
    (10 MS/s, 2.5-3.33 MHz bandwidth, 0-50 dB SNR, one signal, bursts spanning
    80-100 % of the example), with durations scaled to the requested length.
    """
    metadata = TorchSigDefaults().default_dataset_metadata
    metadata.update(
        {
            "sample_rate": 10_000_000,
            "num_iq_samples_dataset": num_iq_samples,
            "fft_size": 64,
            "fft_stride": 64,
            "num_signals_min": 1,
            "num_signals_max": 1,
            "cochannel_overlap_probability": 0.0,
            "snr_db_min": 0.0,
            "snr_db_max": 50.0,
            "noise_power_db": 0.0,
            "signal_duration_in_samples_min": int(0.8 * num_iq_samples),
            "signal_duration_in_samples_max": num_iq_samples,
            "bandwidth_min": 2_500_000,
            "bandwidth_max": 3_333_333,
            "signal_center_freq_min": -2_500_000,
            "signal_center_freq_max": 2_499_999,
            "frequency_min": -2_500_000,
            "frequency_max": 2_499_999,
        }
    )
    return metadata


def build_dataset(
    num_iq_samples: int,
    impairment_level: int,
    signal_generators: list[str],
    seed: int,
) -> TorchSigIterableDataset:
    """Build an infinite TorchSig narrowband dataset yielding ``(iq_2xN, class_index)``."""
    impairments = Impairments(level=impairment_level)
    return TorchSigIterableDataset(
        signal_generators=signal_generators,
        metadata=narrowband_metadata(num_iq_samples),
        transforms=[impairments.dataset_transforms, ComplexTo2D()],
        component_transforms=[impairments.signal_transforms],
        target_labels=["class_index"],
        seed=seed,
    )


def measure(dataset: TorchSigIterableDataset, num_samples: int, warmup: int, num_iq_samples: int) -> float:
    """Return samples/s over ``num_samples`` examples after ``warmup`` untimed ones."""
    for _ in range(warmup):
        next(dataset)
    start = time.perf_counter()
    for _ in range(num_samples):
        data, _label = next(dataset)
    elapsed = time.perf_counter() - start
    if num_samples and data.shape != (2, num_iq_samples):
        raise RuntimeError(f"unexpected sample shape {data.shape}, wanted (2, {num_iq_samples})")
    return num_samples / elapsed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024], help="IQ lengths to measure")
    parser.add_argument("--num-samples", type=int, default=500, help="timed samples per length")
    parser.add_argument("--impairment-level", type=int, choices=(0, 1, 2), default=2, help="TorchSig impairment level")
    parser.add_argument("--warmup", type=int, default=20, help="untimed samples before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads value")
    parser.add_argument("--seed", type=int, default=1234, help="dataset seed")
    parser.add_argument(
        "--signal-generators",
        nargs="+",
        default=["all"],
        help='TorchSig generator names (default "all": every public class, sampled uniformly)',
    )
    args = parser.parse_args(argv)
    if args.num_samples <= 0 or args.warmup < 0 or min(args.lengths) <= 0:
        parser.error("--num-samples and --lengths must be positive, --warmup non-negative")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one JSON line."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    results = []
    num_classes = 0
    for length in args.lengths:
        dataset = build_dataset(length, args.impairment_level, args.signal_generators, args.seed)
        num_classes = len(dataset.signal_generators)
        rate = measure(dataset, args.num_samples, args.warmup, length)
        results.append({"length": length, "samples_per_s": round(rate, 2)})

    report = {
        "torchsig_version": torchsig.__version__,
        "torch_version": torch.__version__,
        "results": results,
        "impairment_level": args.impairment_level,
        "num_samples": args.num_samples,
        "warmup_samples": args.warmup,
        "torch_threads": torch.get_num_threads(),
        "signal_generators": args.signal_generators,
        "num_classes": num_classes,
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
