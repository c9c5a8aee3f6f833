"""rfml: radio-signal machine learning on small devices (synthesis, datasets, AMR models)."""

__version__ = "0.1.0"
