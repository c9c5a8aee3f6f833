"""rfml: radio-signal machine learning on small devices (synthesis, datasets, AMR models)."""

__version__ = "0.1.0"

_DATA_EXPORTS = (
    "ISMInterference",
    "RadioML2016",
    "RadioML2018",
    "SignalDataModule",
    "SyntheticSignals",
)
__all__ = ["__version__", *_DATA_EXPORTS]


def __getattr__(name: str) -> object:
    # Imported on first use, so `import rfml` stays light (torch, h5py and Lightning load later).
    if name in _DATA_EXPORTS:
        import rfml.data

        return getattr(rfml.data, name)
    raise AttributeError(f"module 'rfml' has no attribute {name!r}")
