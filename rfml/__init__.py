"""rfml: radio-signal machine learning on small devices (synthesis, datasets, AMR models, training)."""

__version__ = "0.1.0"

_EXPORTS = {
    "ISMInterference": "rfml.data",
    "RadioML2016": "rfml.data",
    "RadioML2018": "rfml.data",
    "SignalDataModule": "rfml.data",
    "SyntheticSignals": "rfml.data",
    "ClST": "rfml.models",
    "KDCNN": "rfml.models",
    "KDMobileNet": "rfml.models",
    "Classifier": "rfml.trainers",
    "SKD": "rfml.trainers",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    # Imported on first use, so `import rfml` stays light (torch, h5py and Lightning load later).
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rfml' has no attribute {name!r}")
