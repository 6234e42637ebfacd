"""Model cards: `cnnlab.cards` (standard library only, so that running an ONNX file needs no torch).

This module keeps the old import path working; the code and its doctests live in `cnnlab.cards`.
"""

from cnnlab.cards import (
    FORMAT, MAX_CARD_BYTES, MAX_CARD_DEPTH, MAX_INPUT_SIDE, PREPROCESSING, ModelCard, card_problem, parse_card,
    tta_problem,
)

__all__ = ["ModelCard", "parse_card", "card_problem", "tta_problem", "FORMAT", "PREPROCESSING",
           "MAX_CARD_BYTES", "MAX_CARD_DEPTH", "MAX_INPUT_SIDE"]
