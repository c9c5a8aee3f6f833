"""The 2.4 GHz ISM-band interference dataset of Schmidt, Block and Meier (INDIN 2017), in its pickled layout.

Facts: ``shared/reference/ism.md``. ``data_iq.p`` holds floats shaped (15 classes, 21 SNRs,
vectors, samples, I/Q) and ``labels.p`` the class index of each vector, shaped (15, 21, vectors).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from rfml.data.base import DatasetFormatError, InMemorySignalDataset
from rfml.data.safe_pickle import load_array_pickle

CLASSES_ISM: list[str] = (
    [f"BT-{mhz}" for mhz in range(2422, 2432)]
    + [f"WiFi-{mhz}" for mhz in (2422, 2427, 2432)]
    + [f"Zigbee-{mhz}" for mhz in (2425, 2430)]
)
SNRS_ISM: list[int] = list(range(-20, 21, 2))


class ISMInterference(InMemorySignalDataset):
    """Schmidt's ISM interference vectors, held in memory, ordered (class, SNR, vector).

    Args:
        path: the directory holding ``data_iq.p`` and ``labels.p``, or the ``data_iq.p`` file itself.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        data_path = os.path.join(folder, "data_iq.p") if os.path.isdir(path) else path
        labels_path = os.path.join(folder, "labels.p")
        self.path = data_path
        data = load_array_pickle(data_path)
        labels = load_array_pickle(labels_path)
        classes, snrs = len(CLASSES_ISM), len(SNRS_ISM)
        if not isinstance(data, np.ndarray):
            raise DatasetFormatError(data_path, "data_iq", f"expected a numpy array, got {type(data).__name__}")
        if not np.issubdtype(data.dtype, np.floating):
            raise DatasetFormatError(data_path, "data_iq", f"expected a float array, got dtype {data.dtype}")
        if data.ndim != 5 or data.shape[:2] != (classes, snrs) or data.shape[4] != 2 or 0 in data.shape:
            raise DatasetFormatError(
                data_path, "data_iq", f"expected shape ({classes}, {snrs}, vectors, samples, 2), got {data.shape}"
            )
        if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
            kind = labels.dtype if isinstance(labels, np.ndarray) else type(labels).__name__
            raise DatasetFormatError(labels_path, "labels", f"expected an integer array, got {kind}")
        if labels.shape != data.shape[:3]:
            raise DatasetFormatError(
                labels_path, "labels", f"expected shape {data.shape[:3]} to match data_iq, got {labels.shape}"
            )
        if labels.min() < 0 or labels.max() >= classes:
            raise DatasetFormatError(
                labels_path, "labels", f"expected class indices in [0, {classes}), got {labels.min()}..{labels.max()}"
            )
        vectors, samples = data.shape[2], data.shape[3]
        self.classes = list(CLASSES_ISM)
        self.snrs = list(SNRS_ISM)
        # One pass: transpose to [N, 2, L] and convert to native float32 (pickles may hold float64 or big-endian).
        frames = data.reshape(-1, samples, 2).transpose(0, 2, 1)
        self.x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        self.y = torch.from_numpy(labels.reshape(-1).astype(np.int64))
        self.snr = torch.tensor(SNRS_ISM).repeat_interleave(vectors).repeat(classes)

    def __repr__(self) -> str:
        return f"ISMInterference({self.path!r}: {len(self)} vectors of {self.length} samples)"
