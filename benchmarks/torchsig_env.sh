#!/usr/bin/env bash
# Create (or refresh) the separate virtual environment used by
# benchmarks/torchsig_throughput.py.
#
# Usage: bash benchmarks/torchsig_env.sh [VENV_DIR]
#   VENV_DIR defaults to .venv-torchsig in the repository root.
#   PYTHON selects the interpreter used to create it (default: python3).
#
# torch is pinned to the CPU build 2.13.0 and protected by a constraint file on
# every later pip call, so nothing can upgrade it (an unpinned torch would pull
# the CUDA wheels). torchsig is installed with --no-deps because it declares
# torchaudio, whose wheels do not load with this torch; its one use of
# torchaudio (transforms.Spectrogram) is served at run time by the stand-in in
# benchmarks/torchsig_standin/. Its other runtime dependencies are installed
# explicitly, pinned, with opencv-python-headless providing cv2 in place of
# opencv-python (same module, no GUI/OpenGL system libraries). Safe to re-run.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${1:-$REPO_ROOT/.venv-torchsig}"
PYTHON="${PYTHON:-python3}"

TORCH_VERSION="2.13.0"
TORCHSIG_VERSION="2.2.0"
TORCHSIG_DEPS=(
    "lightning==2.6.6"
    "tqdm==4.70.1"
    "numpy==2.4.6"
    "scipy==1.17.1"
    "h5py==3.16.0"
    "matplotlib==3.11.2"
    "PyYAML==6.0.3"
    "opencv-python-headless==5.0.0.93"
    "numba==0.68.1"
    "soundfile==0.14.0"
)

if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    echo "creating virtual environment in $VENV_DIR" >&2
    "$PYTHON" -m venv "$VENV_DIR"
fi
VPY="$VENV_DIR/bin/python"

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"

PIP=("$VPY" -m pip install --quiet --constraint "$CONSTRAINTS")
if [[ -d /opt/wheels ]]; then
    # Local CPU torch wheel on this machine's image.
    PIP+=(--find-links /opt/wheels)
fi

"${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" "${TORCHSIG_DEPS[@]}"
"${PIP[@]}" --no-deps "torchsig==$TORCHSIG_VERSION"

if "$VPY" -m pip show --quiet torchaudio >/dev/null 2>&1; then
    echo "removing torchaudio: it does not load with the CPU torch build" >&2
    "$VPY" -m pip uninstall --quiet --yes torchaudio
fi

PYTHONPATH="$REPO_ROOT/benchmarks/torchsig_standin" "$VPY" - <<'EOF'
import sys

import numba
import numpy
import scipy
import torch
import torchaudio
import torchsig

print(f"venv:      {sys.prefix}")
print(f"python:    {sys.version.split()[0]}")
print(f"torch:     {torch.__version__}")
print(f"torchsig:  {torchsig.__version__}")
print(f"numpy:     {numpy.__version__}")
print(f"scipy:     {scipy.__version__}")
print(f"numba:     {numba.__version__}")
print(f"torchaudio stand-in: {torchaudio.__version__} ({torchaudio.__file__})")
EOF
