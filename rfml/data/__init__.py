"""Signal datasets in the real on-disk formats, synthetic data, splits, views and the SignalDataModule."""

import importlib

# Each public name and the module that defines it. They are imported on first use, so a command's argument
# parser (rfml.data.dataset_command) can live here without loading torch; the DataModule also pulls in
# Lightning (about 3 s and 180 MB).
_EXPORTS = {
    "CLASSES_ISM": "rfml.data.ism",
    "ISMInterference": "rfml.data.ism",
    "NORMS": "rfml.data.views",
    "VIEWS": "rfml.data.views",
    "View": "rfml.data.views",
    "apply_view": "rfml.data.views",
    "PRESETS": "rfml.data.synthetic",
    "SyntheticSignals": "rfml.data.synthetic",
    "source_indices": "rfml.data.synthetic",
    "write_dataset": "rfml.data.synthetic",
    "SHIPPED_CLASSES_RML2018A": "rfml.data.radioml",
    "RadioML2016": "rfml.data.radioml",
    "RadioML2018": "rfml.data.radioml",
    "BatchStream": "rfml.data.sampling",
    "BlockShuffleSampler": "rfml.data.sampling",
    "EpochLoader": "rfml.data.sampling",
    "DatasetFormatError": "rfml.data.base",
    "DatasetIdentityError": "rfml.data.base",
    "SignalDataset": "rfml.data.base",
    "UnsafePickleError": "rfml.data.safe_pickle",
    "load_array_pickle": "rfml.data.safe_pickle",
    "parse_snrs": "rfml.data.splits",
    "parse_split": "rfml.data.splits",
    "snr_mask": "rfml.data.splits",
    "stratified_split": "rfml.data.splits",
    "SignalDataModule": "rfml.data.module",
    "open_dataset": "rfml.data.module",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'rfml.data' has no attribute {name!r}")
