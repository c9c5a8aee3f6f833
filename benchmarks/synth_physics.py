"""The synthesizer's physics figures: SER vs closed form, measured SNR per class, RRC bandwidth.

    python benchmarks/synth_physics.py

The same measurements the tests assert on (``tests/test_dsp_physics.py``), printed as Markdown
tables for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import torch

from rfml.dsp import CLASSES_RML2016A, CLASSES_RML2018A, Synthesizer, verify


def main() -> None:
    torch.set_num_threads(2)
    print("| modulation | Es/N0 (dB) | closed-form SER | measured SER | errors | deviation |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, points in verify.SER_CHECK_POINTS.items():
        for seed, esn0 in enumerate(points):
            expected = verify.symbol_error_rate(name, esn0)
            measured, errors = verify.measure_symbol_error_rate(name, esn0, min_errors=2000, seed=seed)
            deviation = 100 * (measured / expected - 1)
            print(f"| {name} | {esn0} | {expected:.3e} | {measured:.3e} | {errors} | {deviation:+.1f} % |")

    classes = sorted(set(CLASSES_RML2016A) | set(CLASSES_RML2018A))
    print(f"\nMeasured SNR, mean of 2,000 examples per class and SNR, {len(classes)} classes, L = 128, rml2016:")
    print("\n| requested (dB) | worst class | its mean measured (dB) | mean over classes (dB) |")
    print("|---:|---|---:|---:|")
    synth = Synthesizer(classes, length=128, channel="rml2016", seed=5)
    for snr in (-10, 0, 10):
        batch = synth.generate(range(2000 * len(classes)), snr_db=snr, return_clean=True)
        per_class = torch.zeros(len(classes)).index_add_(0, batch["y"], verify.measured_snr_db(batch)) / 2000
        worst = int((per_class - snr).abs().argmax())
        print(f"| {snr} | {classes[worst]} | {per_class[worst]:.3f} | {per_class.mean():.3f} |")

    print("\n| roll-off | measured 99 % bandwidth (Rs) | closed form (Rs) | power within (1 + roll-off) Rs |")
    print("|---:|---:|---:|---:|")
    for rolloff in (0.2, 0.35, 0.5):
        synth = Synthesizer(["QPSK"], length=4096, samples_per_symbol=8, channel="clean", rolloff=rolloff)
        freqs, psd = verify.power_spectrum(synth.generate(range(64), return_clean=True)["clean"], sample_rate=8)
        share = verify.power_share_within(freqs, psd, (1 + rolloff) / 2)
        measured, closed = verify.occupied_bandwidth(freqs, psd), verify.rrc_occupied_bandwidth(rolloff)
        print(f"| {rolloff} | {measured:.3f} | {closed:.3f} | {100 * share:.2f} % |")


if __name__ == "__main__":
    main()
