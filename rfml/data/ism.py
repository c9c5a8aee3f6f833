"""The 2.4 GHz ISM-band interference dataset of Schmidt, Block and Meier (INDIN 2017), in its pickled layout.

Facts: ``datasets/`` (the ISM card). ``data_iq.p`` holds floats shaped (15 classes, 21 SNRs,
vectors, samples, I/Q) and ``labels.p`` the class index of each vector, shaped (15, 21, vectors).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from rfml.data.base import ISM_RECORD, DatasetFormatError, InMemorySignalDataset, check_finite, read_sidecar
from rfml.data.safe_pickle import load_array_pickle
from rfml.dsp.ism import CLASSES_ISM, SNRS_ISM

AXES = ("class", "SNR", "vector", "sample", "I/Q")


def check_vectors_finite(data: np.ndarray, path: str) -> None:
    """Raise :class:`DatasetFormatError` naming the first vector of ``data_iq`` (``[class, SNR, vector, sample,
    2]``) that holds NaN or ±Inf, as ``data_iq[class, SNR, vector]``: the loader's check and ``rfml dataset``'s."""
    grid = data.shape[:3]
    check_finite(
        data.reshape(-1, *data.shape[3:]),
        path,
        "data_iq",
        describe=lambda row: "data_iq[{}, {}, {}]".format(*np.unravel_index(row, grid)),
    )


class ISMInterference(InMemorySignalDataset):
    """Schmidt's ISM interference vectors, held in memory, ordered (class, SNR, vector).

    A folder written by ``rfml generate`` also holds ``provenance.json``: the files must hold what it records, and
    each load logs one ``synthetic data (…) at FOLDER`` line (logger ``rfml.data``).

    Checked on loading, each refusal a :class:`DatasetFormatError` naming the file and the field: the layout of
    both arrays, labels in ``[0, 15)``, and (with ``finite``) no NaN or ±Inf in any vector of ``data_iq``. The
    SNR of a vector is its position on axis 1 (``SNRS_ISM``), so the file stores no SNR value to check.

    Args:
        path: the directory holding ``data_iq.p`` and ``labels.p``, or the ``data_iq.p`` file itself.
        finite: refuse a vector holding NaN or ±Inf, naming it as ``data_iq[class, SNR, vector]`` (default);
            ``False`` loads them.
    """

    def __init__(self, path: str | os.PathLike[str], finite: bool = True) -> None:
        path = os.fspath(path)
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        data_path = os.path.join(folder, "data_iq.p") if os.path.isdir(path) else path
        labels_path = os.path.join(folder, "labels.p")
        self.path = data_path
        if not os.path.isfile(data_path):
            raise FileNotFoundError(f"{data_path}: no such file (the ISM set is a folder with data_iq.p and labels.p)")
        record = read_sidecar(os.path.join(folder, ISM_RECORD), {"data_iq.p": data_path, "labels.p": labels_path})
        data = load_array_pickle(data_path)
        labels = load_array_pickle(labels_path)
        classes, snrs = len(CLASSES_ISM), len(SNRS_ISM)
        if not isinstance(data, np.ndarray):
            raise DatasetFormatError(data_path, "data_iq", f"expected a numpy array, got {type(data).__name__}")
        if not np.issubdtype(data.dtype, np.floating):
            raise DatasetFormatError(data_path, "data_iq", f"expected a float array, got dtype {data.dtype}")
        layout = f"({classes} classes, {snrs} SNRs, vectors, samples, 2 for I/Q)"
        if data.ndim != 5:
            raise DatasetFormatError(data_path, "data_iq", f"expected 5 axes {layout}, got shape {data.shape}")
        for axis, (name, size) in enumerate(zip(AXES, (classes, snrs, None, None, 2), strict=True)):
            if (size is not None and data.shape[axis] != size) or data.shape[axis] == 0:
                wanted = size if size is not None else "at least 1"
                raise DatasetFormatError(
                    data_path,
                    "data_iq",
                    f"axis {axis} ({name}) has {data.shape[axis]} entries, expected {wanted}; "
                    f"shape {data.shape}, expected {layout}",
                )
        if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
            kind = labels.dtype if isinstance(labels, np.ndarray) else type(labels).__name__
            raise DatasetFormatError(labels_path, "labels", f"expected an integer array, got {kind}")
        if labels.shape != data.shape[:3]:
            wrong = next((a for a in range(min(labels.ndim, 3)) if labels.shape[a] != data.shape[a]), labels.ndim)
            where = f"axis {wrong} ({AXES[wrong]}) differs; " if wrong < 3 else "it needs 3 axes; "
            raise DatasetFormatError(
                labels_path, "labels", f"{where}expected shape {data.shape[:3]} to match data_iq, got {labels.shape}"
            )
        if labels.min() < 0 or labels.max() >= classes:
            raise DatasetFormatError(
                labels_path, "labels", f"expected class indices in [0, {classes}), got {labels.min()}..{labels.max()}"
            )
        vectors, samples = data.shape[2], data.shape[3]
        if finite:
            check_vectors_finite(data, data_path)
        self.classes = list(CLASSES_ISM)
        self.snrs = list(SNRS_ISM)
        # One pass: transpose to [N, 2, L] and convert to native float32 (pickles may hold float64 or big-endian).
        frames = data.reshape(-1, samples, 2).transpose(0, 2, 1)
        self.x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        self.y = torch.from_numpy(labels.reshape(-1).astype(np.int64))
        self.snr = torch.tensor(SNRS_ISM).repeat_interleave(vectors).repeat(classes)
        self._identify(folder or ".", record)

    def __repr__(self) -> str:
        return f"ISMInterference({self.path!r}: {len(self)} vectors of {self.length} samples)"
