"""The model registry behind ``rfml.models.create``: one name per architecture, timm-style."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from ondevice.errors import UnknownNameError

_MODELS: dict[str, Callable[..., nn.Module]] = {}

M = TypeVar("M", bound=Callable[..., nn.Module])


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make ``create(name, ...)`` build this model."""

    def decorate(factory: M) -> M:
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is registered twice ({_MODELS[name]} and {factory})")
        _MODELS[name] = factory
        return factory

    return decorate


def available() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def get(name: str) -> Callable[..., nn.Module]:
    """The class (or factory) registered under ``name``; the error lists close matches."""
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownNameError("model", name, _MODELS) from None


def create(name: str, num_classes: int, length: int = 128, **kwargs: object) -> nn.Module:
    """Build a registered model for inputs ``[B, 2, length]`` and ``num_classes`` logits.

    ``kwargs`` go to the model's constructor (widths, depths, ablation switches); see each class.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if length < 8:
        raise ValueError(f"length must be >= 8 samples, got {length}")
    return get(name)(num_classes=num_classes, length=length, **kwargs)
