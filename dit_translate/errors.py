"""The project's errors, in one place.

Two families, told apart by their base classes:

- **Bad input** (``ValueError``): the request or a file the user named is wrong, and saying so fixes it.
  ``PresetError`` (a preset file), ``ImageError`` (an image), ``DataError`` (a training data folder),
  ``CheckpointError`` (a folder that is not a paired checkpoint).
- **The environment** (``RuntimeError`` / ``OSError``): the request is fine but this machine cannot serve
  it now. ``MissingWeightsError`` (weights neither on disk nor downloadable), ``CorruptWeightsError``
  (weights on disk that do not load), ``MemoryExhaustedError`` (the device ran out of memory),
  ``TimeLimitError`` (the request ran past its time limit), ``WriteError`` (a file could not be written).

Every one is a ``DitTranslateError`` too, and its message is one line a person can act on: the CLI
prints it and exits with status 2, the app shows it; neither shows a traceback for them.
"""

from __future__ import annotations


class DitTranslateError(Exception):
    """Base of every error this package raises on purpose; the message is meant for the user."""


class PresetError(DitTranslateError, ValueError):
    """A preset that does not exist or has a bad field."""


class ImageError(DitTranslateError, ValueError):
    """An image could not be read, resized or written; the message says which and why."""


class DataError(DitTranslateError, ValueError):
    """A data folder that yields no usable pairs, or does not exist; the message says why."""


class CheckpointError(DitTranslateError, ValueError):
    """A folder that is not a (complete) paired checkpoint; the message names it and what is missing."""


class MissingWeightsError(DitTranslateError, RuntimeError):
    """A preset's weights are neither on disk nor downloadable here."""


class CorruptWeightsError(MissingWeightsError):
    """Weights on disk that cannot be loaded (a truncated or corrupt safetensors file, or files that do not
    match their config); the message names the file or folder. A ``MissingWeightsError`` too: the weights
    are not usable here, and the CLI and the app report both the same way."""


class MemoryExhaustedError(DitTranslateError, RuntimeError):
    """A request needed more memory than the device had; the message names the request and what to reduce
    (raised by ``api``, which has released the failed run's memory: the process keeps serving)."""


class TimeLimitError(DitTranslateError, RuntimeError):
    """A request ran past its time limit (``api.Deadline``) and was stopped at its next step; the message names
    the request, the limit and what to reduce (raised by ``api`` after the stopped run's memory was released)."""


class WriteError(DitTranslateError, OSError):
    """A file or folder could not be written; the message names it and why. Nothing partial was left."""
