"""Short-time Fourier transform spectrogram built on ``torch.stft``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["Spectrogram"]


class Spectrogram(nn.Module):
    """Compute a (power) spectrogram of a real or complex signal.

    Input has shape ``(..., time)``; output has shape ``(..., freq, frames)``.

    Args:
        n_fft: FFT size; the one-sided output has ``n_fft // 2 + 1`` bins.
        win_length: Window length, at most ``n_fft``; defaults to ``n_fft``.
        hop_length: Hop between frames; defaults to ``win_length // 2``.
        pad: Zero padding added to both ends of the signal before the STFT.
        window_fn: Factory called as ``window_fn(win_length, **wkwargs)``.
        power: Exponent applied to the magnitude (``None`` keeps the complex STFT).
        normalized: ``True`` or ``"window"`` divides by the window's L2 norm;
            ``"frame_length"`` uses ``torch.stft``'s own ``1/sqrt(n_fft)`` scaling.
        wkwargs: Extra keyword arguments for ``window_fn``.
        center: Pad so that frame ``t`` is centred on sample ``t * hop_length``.
        pad_mode: Padding mode used when ``center`` is true.
        onesided: Return only non-negative frequencies (must be false for complex input).
        return_complex: Accepted for signature compatibility; a complex result is
            returned whenever ``power`` is ``None``.
    """

    window: Tensor

    def __init__(
        self,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        pad: int = 0,
        window_fn: Callable[..., Tensor] = torch.hann_window,
        power: float | None = 2.0,
        normalized: bool | str = False,
        wkwargs: dict | None = None,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool = True,
        return_complex: bool | None = None,
    ) -> None:
        super().__init__()
        if n_fft <= 0:
            raise ValueError(f"n_fft must be positive, got {n_fft}")
        self.n_fft = int(n_fft)
        self.win_length = int(win_length) if win_length is not None else self.n_fft
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length must be in (0, n_fft], got {self.win_length}")
        self.hop_length = int(hop_length) if hop_length is not None else self.win_length // 2
        if self.hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {self.hop_length}")
        if normalized not in (True, False, "window", "frame_length"):
            raise ValueError(f"unsupported normalized={normalized!r}")
        self.pad = int(pad)
        self.power = power
        self.normalized = normalized
        self.center = center
        self.pad_mode = pad_mode
        self.onesided = onesided
        self.return_complex = return_complex
        window = window_fn(self.win_length, **(wkwargs or {}))
        self.register_buffer("window", window)

    def forward(self, waveform: Tensor) -> Tensor:
        """Return the spectrogram of ``waveform`` (shape ``(..., time)``)."""
        if self.pad > 0:
            waveform = nn.functional.pad(waveform, (self.pad, self.pad), mode="constant")
        batch_shape = waveform.shape[:-1]
        frames = waveform.reshape(-1, waveform.shape[-1])
        window = self.window
        if window.dtype != frames.real.dtype:
            window = window.to(frames.real.dtype)
        stft = torch.stft(
            frames,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            center=self.center,
            pad_mode=self.pad_mode,
            normalized=self.normalized == "frame_length",
            onesided=self.onesided,
            return_complex=True,
        )
        stft = stft.reshape(*batch_shape, *stft.shape[-2:])
        if self.normalized is True or self.normalized == "window":
            stft = stft / window.pow(2).sum().sqrt()
        if self.power is None:
            return stft
        magnitude = stft.abs()
        if self.power == 1.0:
            return magnitude
        if self.power == 2.0:
            return magnitude.square()
        return magnitude.pow(self.power)
