"""Signal datasets in the real on-disk formats, synthetic data, splits, views and the SignalDataModule."""

from rfml.data.base import DatasetFormatError, SignalDataset
from rfml.data.ism import CLASSES_ISM, ISMInterference
from rfml.data.radioml import SHIPPED_CLASSES_RML2018A, RadioML2016, RadioML2018
from rfml.data.safe_pickle import UnsafePickleError, load_array_pickle
from rfml.data.sampling import BatchStream, BlockShuffleSampler, EpochLoader
from rfml.data.splits import parse_snrs, parse_split, snr_mask, stratified_split
from rfml.data.synthetic import PRESETS, SyntheticSignals, source_indices, write_dataset
from rfml.data.views import NORMS, VIEWS, View, apply_view


def __getattr__(name: str) -> object:
    # The DataModule pulls in Lightning (about 3 s and 180 MB); load it only when asked for.
    if name in ("SignalDataModule", "open_dataset"):
        from rfml.data import module

        return getattr(module, name)
    raise AttributeError(f"module 'rfml.data' has no attribute {name!r}")


__all__ = [
    "CLASSES_ISM",
    "NORMS",
    "PRESETS",
    "SHIPPED_CLASSES_RML2018A",
    "VIEWS",
    "BatchStream",
    "BlockShuffleSampler",
    "DatasetFormatError",
    "EpochLoader",
    "ISMInterference",
    "RadioML2016",
    "RadioML2018",
    "SignalDataModule",
    "SignalDataset",
    "SyntheticSignals",
    "UnsafePickleError",
    "View",
    "apply_view",
    "load_array_pickle",
    "open_dataset",
    "parse_snrs",
    "parse_split",
    "snr_mask",
    "source_indices",
    "stratified_split",
    "write_dataset",
]
