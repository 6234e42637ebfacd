"""The parts of `keras.backend` CNN tutorials call."""

from __future__ import annotations

import gc

__all__ = ["clear_session", "image_data_format"]


def clear_session() -> None:
    """Free what earlier models held. (Layer names start afresh in every new model here.)"""
    gc.collect()


def image_data_format() -> str:
    """Arrays cross cnnlab.keras channels-last, as Keras's default."""
    return "channels_last"
