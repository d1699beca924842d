"""Errors with messages a field person can act on: they say what was wrong and where."""

from __future__ import annotations


class BlankfilterError(Exception):
    """Base for errors that end a command with a clear message instead of a traceback."""


class ConfigError(BlankfilterError):
    """A config key or value is wrong; the message names the key, the value and the file."""


class ModelError(BlankfilterError):
    """The model file or its card cannot be used; the message names the file."""


class ImageError(BlankfilterError):
    """A frame cannot be decoded; the frame is kept (fail open) and this message is recorded."""


class LedgerUnavailable(BlankfilterError):
    """The ledger cannot be written (disk full, read-only card): nothing may be moved or deleted."""


class LedgerDamaged(LedgerUnavailable):
    """The ledger file is damaged (a bad page or header): like an unwritable ledger, nothing may be
    moved or deleted; the message names the file and says how to check and recover it."""
