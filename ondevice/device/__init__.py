"""The on-device side: needs only numpy and onnxruntime, never torch.

`python -m ondevice.device BUNDLE_DIR --threads N` profiles every model of a bundle written by
`ondevice bundle`; two files, `runner.py` (copied into each bundle as `profile_bundle.py`) and `manifest.py`,
are all a board or phone needs. `python -m ondevice.device predict MODEL.onnx FRAMES.npy` (or :func:`predict`,
:class:`Predictor`) classifies raw I/Q frames with a model written by `rfml export`, preprocessing them in numpy.
"""

from ondevice.device.manifest import BundleError, read_manifest
from ondevice.device.predict import ModelPropsError, Predictor, predict
from ondevice.device.runner import ProfileError, environment, profile_bundle, summarize_latency

__all__ = [
    "BundleError",
    "ModelPropsError",
    "Predictor",
    "ProfileError",
    "environment",
    "predict",
    "profile_bundle",
    "read_manifest",
    "summarize_latency",
]
