"""The exception classes that mean "the user's input is wrong", shared by every layer.

``post-accel`` reports an :class:`InputError` (and only that family) as one line and exit status 2:
the message names what is wrong and how to fix it. Any other exception is a bug in post-accel and is
reported with its traceback. ``golden`` is the bottom of the dependency order, so ``hw``, ``sim`` and
``flows`` all raise these classes (or subclasses) without importing upwards.
"""

from __future__ import annotations

__all__ = ["InputError", "ToolMissing"]


class InputError(ValueError):
    """Bad input a user can fix: a flag, a model or checkpoint file, a model that does not fit.

    The message is one line that names the flag, file, layer or field and the fix.
    """


class ToolMissing(InputError):
    """A program the command needs (a simulator, yosys, nextpnr) is not installed; the message says
    how to install it."""
