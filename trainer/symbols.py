"""Ticker validation: the one gate every symbol passes before it touches a path, key or argv."""

from __future__ import annotations

import re

from trainer.errors import TrainerError

# Upper-case letters, digits, dots and dashes (BRK.B, RDS-A), 1 to 15 characters, no leading punctuation.
SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9.\-]{0,14}$"
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)


class InvalidSymbolError(TrainerError, ValueError):
    """A ticker that does not match SYMBOL_PATTERN."""


def validate_symbol(symbol: object) -> str:
    """Return `symbol` unchanged if it is a valid ticker, else raise InvalidSymbolError naming it."""
    if not isinstance(symbol, str):
        raise InvalidSymbolError(f"symbol must be a string, got {type(symbol).__name__}")
    if not _SYMBOL_RE.fullmatch(symbol):
        shown = symbol if len(symbol) <= 40 else symbol[:37] + "..."
        raise InvalidSymbolError(
            f"invalid symbol {shown!r}: expected 1-15 characters of A-Z, 0-9, '.' or '-' "
            f"starting with a letter or digit (pattern {SYMBOL_PATTERN})"
        )
    return symbol
