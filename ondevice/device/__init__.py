"""The on-device side of profiling: needs only numpy and onnxruntime, never torch.

`python -m ondevice.device BUNDLE_DIR --threads N` profiles every model of a bundle written by
`ondevice bundle`; the single file `runner.py` (copied into each bundle as `profile_bundle.py`) is all
a board or phone needs.
"""

from ondevice.device.runner import (
    BundleError,
    ProfileError,
    environment,
    profile_bundle,
    read_manifest,
    summarize_latency,
)

__all__ = ["BundleError", "ProfileError", "environment", "profile_bundle", "read_manifest", "summarize_latency"]
