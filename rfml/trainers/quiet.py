"""Lightning's notices silenced in one place: :mod:`ondevice.quiet`, shared with slm (re-exported for rfml)."""

from ondevice.quiet import QUIET_TRAINER_ARGS, quiet_lightning, silence_lightning

__all__ = ["QUIET_TRAINER_ARGS", "quiet_lightning", "silence_lightning"]
