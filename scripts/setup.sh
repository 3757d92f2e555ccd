#!/usr/bin/env bash
# Set up whatever is missing for pu-mlc on this machine, idempotently:
#   - a virtual environment in .venv with the pinned packages (constraints.txt): pu-mlc itself
#     (editable) with its extras search (Ray Tune + Optuna), demo and dev,
#   - the real Fashion-MNIST photos the demo dataset is built from (Debian dataset-fashion-mnist).
# Re-running it when everything is in place takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
FASHION_DIR=${PUMLC_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

stamp="$VENV/.pu-mlc-installed"
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing pinned packages (torch, ray, optuna, ...); first time takes minutes"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # the library (core) + the Ray/Optuna search + the demo's packages + the test tools
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[search,demo,dev]"
    echo "$want" > "$stamp"
fi

if [ ! -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[setup] installing Debian package dataset-fashion-mnist"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "[setup] Fashion-MNIST not found in $FASHION_DIR." >&2
        echo "        Run: sudo apt-get install dataset-fashion-mnist" >&2
        echo "        or download the four idx files (train/t10k images/labels) into a folder" >&2
        echo "        and set PUMLC_FASHION_MNIST_DIR=/that/folder" >&2
        exit 1
    fi
fi
echo "[setup] ready: $VENV ($("$VENV/bin/python" -c 'import torch, ray; print("torch", torch.__version__, "ray", ray.__version__)'))"
