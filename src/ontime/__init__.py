"""ontime: a reproducible, data-versioned flight-delay model, from raw tables to a served model."""

__version__ = "0.1.0"
