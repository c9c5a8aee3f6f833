"""ondevice: the core shared by rfml and slm (distillation, latency profiling, export).

It knows nothing about radios or language; its modules arrive with the core issue.
"""

__version__ = "0.1.0"
