#!/usr/bin/env bash
# The reference side of the benchmarks: tf.keras in its own environment, never a cnnlab dependency.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv-tf"
"$here/.venv-tf/bin/pip" install -q "tensorflow-cpu==2.21.0" scipy pillow  # scipy+pillow: ImageDataGenerator
"$here/.venv-tf/bin/python" -c "import tensorflow as tf; print('tensorflow', tf.__version__)"
