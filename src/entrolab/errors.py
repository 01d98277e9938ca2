"""Error types raised by entrolab.

Every error raised on bad user input is an :class:`EntrolabError` whose message names the problem
and says how to fix it. It subclasses :class:`ValueError` so generic handlers keep working.
"""

from __future__ import annotations


class EntrolabError(ValueError):
    """Bad input or configuration, with a message that says how to fix it."""


class UnknownNameError(EntrolabError, KeyError):
    """A name that is not in a registry (or not a known model); the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""
