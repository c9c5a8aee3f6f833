"""Benchmark-only stand-in for the parts of ``torchaudio`` that TorchSig imports.

TorchSig 2.2 imports ``torchaudio`` solely for ``torchaudio.transforms.Spectrogram``
(used by ``torchsig.utils.dsp.compute_spectrogram``).  The real torchaudio wheels
do not load against the CPU build of torch used here, so this package provides a
small, genuine implementation of that one transform on top of ``torch.stft``.

It is only placed on ``PYTHONPATH`` when running ``benchmarks/torchsig_throughput.py``
and is not part of the ``rfml`` package.
"""

from . import transforms

__all__ = ["transforms"]
__version__ = "0.0.0+standin"
