"""Torch-native, batched, seeded RF signal synthesis: modulators, channel and the Synthesizer."""

from rfml.dsp.channel import PRESETS as CHANNEL_PRESETS
from rfml.dsp.channel import ChannelConfig, esn0_db
from rfml.dsp.modulate import MODULATIONS, constellation
from rfml.dsp.synthesizer import (
    CLASS_SETS,
    CLASSES_RML2016A,
    CLASSES_RML2016B,
    CLASSES_RML2018A,
    Synthesizer,
)

__all__ = [
    "CHANNEL_PRESETS",
    "CLASSES_RML2016A",
    "CLASSES_RML2016B",
    "CLASSES_RML2018A",
    "CLASS_SETS",
    "MODULATIONS",
    "ChannelConfig",
    "Synthesizer",
    "constellation",
    "esn0_db",
]
