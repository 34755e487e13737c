"""argparse value types shared by the ``post-accel`` subcommands."""

from __future__ import annotations

import argparse

__all__ = ["int_at_least", "positive_int", "nonneg_int"]


def int_at_least(lowest: int):
    """An argparse ``type`` accepting integers ``>= lowest`` with a one-line error otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be >= {lowest}, got {value}")
        return value
    parse.__name__ = f"integer >= {lowest}"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)
