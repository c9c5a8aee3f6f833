"""slm: small language models shaped for a device (runtime-first architecture search, pre-training).

Its modules arrive with the slm issue; it depends on ondevice, never on rfml.
"""

__version__ = "0.1.0"
