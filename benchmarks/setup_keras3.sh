#!/usr/bin/env bash
# Keras 3 on its torch backend, in its own environment (never a cnnlab dependency): a second
# reference beside tf.keras. Use it as: KERAS_BACKEND=torch benchmarks/.venv-k3/bin/python ...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv-k3"
# keras pinned to the version tensorflow-cpu 2.21.0 brings in .venv-tf, so both references agree
"$here/.venv-k3/bin/pip" install -q "keras==3.15.1" "torch==2.14.1" "torchvision==0.29.1"
KERAS_BACKEND=torch "$here/.venv-k3/bin/python" -c \
    "import keras, torch; print('keras', keras.__version__, 'backend', keras.backend.backend(), 'torch', torch.__version__)"
