"""slm: small language models shaped for a device (runtime-first architecture search, pre-training).

``slm.arch`` (shapes and exact counts, no torch), ``slm.model`` and ``slm.export`` (the decoder and its ONNX graphs),
``slm.latency`` (timing and the latency predictor), ``slm.search`` (the shape search), ``slm.train`` and
``slm.data`` (pre-training and distillation). It depends on ondevice, never on rfml.
"""

__version__ = "0.1.0"
