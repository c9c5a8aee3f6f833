"""What a study records about the machine and process a training ran on, and the one line its reports print."""

from __future__ import annotations

import os
from typing import Any


def machine_info() -> dict[str, Any]:
    """This machine and process: ``ondevice``'s :func:`~ondevice.device.runner.environment` (host, CPU model and
    cores, OS, Python, numpy, ONNX Runtime) without the CPU's feature flags, plus the process id and the torch,
    Lightning and device facts a training's times depend on."""
    import torch

    from ondevice.device.runner import environment

    info = environment()
    info.pop("cpu_flags", None)  # a hundred names per record; not what a training's times depend on
    cuda = torch.cuda.is_available()
    info.update(
        pid=os.getpid(),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        device="cuda" if cuda else "cpu",
        gpu=torch.cuda.get_device_name(0) if cuda else None,
    )
    try:
        import lightning

        info["lightning"] = lightning.__version__
    except ImportError:  # pragma: no cover - lightning is a dependency
        info["lightning"] = None
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line for a report, e.g. ``2-core <CPU> (host), Linux-…; Python 3.11.7, torch 2.13.0, Lightning 2.6.6 on
    cpu with 1 torch thread(s)``; facts an older record lacks are left out."""
    machine = f"{info.get('cpu_count', '?')}-core {info.get('cpu_model', '?')}"
    if info.get("hostname"):
        machine += f" ({info['hostname']})"
    if info.get("platform"):
        machine += f", {info['platform']}"
    names = (("python", "Python"), ("torch", "torch"), ("lightning", "Lightning"))
    software = ", ".join(f"{name} {info[key]}" for key, name in names if info.get(key))
    if info.get("device"):
        software += f" on {info['device']}" + (f" ({info['gpu']})" if info.get("gpu") else "")
    if info.get("torch_threads"):
        software += f" with {info['torch_threads']} torch thread(s)"
    return f"{machine}; {software}" if software else machine
