"""Errors a user can act on: each message names what is wrong and how to fix it."""

from __future__ import annotations


class OntimeError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class ConfigError(OntimeError):
    """A params/config value is missing, unknown or invalid."""


class DataError(OntimeError):
    """Input data is missing, malformed or fails validation."""


class Interrupted(OntimeError):
    """The user stopped a run (Ctrl-C); the message says what was kept and how to go on."""
