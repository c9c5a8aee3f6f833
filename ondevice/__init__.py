"""ondevice: the core shared by rfml and slm. It knows nothing about radios or language.

- `ondevice.distill`: KD, hybrid CE + KD and feature-hint losses; `DistillationModule` for Lightning.
- `ondevice.profile`: `profile(...) -> LatencyReport` on torch and ONNX Runtime.
- `ondevice.export`: ONNX export with a dynamic batch, verification against torch, dynamic int8.
- `ondevice.device`: the torch-free on-device side (numpy + onnxruntime); `ondevice.bundle` on the host.
- `ondevice.io`: atomic writes, JSON and sha256 for the whole project; `ondevice.command_line`: the CLI dispatcher.

Importing `ondevice` imports nothing heavy, so `ondevice.device` works where torch is absent.
"""

__version__ = "0.1.0"
