"""One exception family for user mistakes.

Every message is one line: what was expected, what came, and how to fix it. The CLI prints
these without a traceback (``--debug`` shows it); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class EdgesegError(Exception):
    """A user-facing error: bad input, missing file, incompatible artifact."""


class DatasetError(EdgesegError):
    """A dataset spec, file or label that cannot be used."""


class ModelError(EdgesegError):
    """An unknown model name or an invalid model configuration."""


class CheckpointError(EdgesegError):
    """A checkpoint or weights file that is missing, truncated or for another model."""
