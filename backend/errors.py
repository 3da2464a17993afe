"""Exceptions that carry a message meant for the user.

The CLI, the QGIS tasks and the Processing algorithms all catch :class:`UserError` and show its
message as one line; anything else is a bug and is reported as such.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an impossible request, explained in one line the user can act on."""


class Cancelled(Exception):
    """The caller asked the running job to stop; nothing it wrote is left looking complete."""
