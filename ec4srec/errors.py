"""The package's user-facing error types (the bottom layer: every layer may raise them).

- :class:`ConfigError`: a config key or value is invalid; the message names the dotted key.
- :class:`CLIError`: a user error a command reports in one line (exit status 2).
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the dotted key."""


class CLIError(Exception):
    """A user error the CLI reports in one line."""
