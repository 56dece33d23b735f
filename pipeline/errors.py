"""Exceptions raised for problems a user can fix.

Library code raises these with a sentence that names the argument, the value and what to do;
the CLI prints that one line and exits with status 1 (no traceback).

One rule for naming the fix, so that one message serves both audiences: the library names its
own argument (``overwrite=True``, ``out``), followed, when ``perturb`` has an option for it, by that
option in parentheses: ``pass overwrite=True (--overwrite)``. A message never names a CLI option
alone, and the CLI does not rewrite library messages.
"""


class PipelineError(Exception):
    """Base class for every user-facing error of the package."""


class ModelUnavailableError(PipelineError):
    """A model spec is unknown, or its weights cannot be obtained here."""


class ImageReadError(PipelineError):
    """An image file is missing, unreadable, or not an image."""


class StoreError(PipelineError):
    """An HDF5 mask store is missing, malformed, or incompatible with the requested run."""


class ConfigError(PipelineError, ValueError):
    """A configuration value is out of range or unknown."""


class DeviceMemoryError(PipelineError):
    """The device ran out of memory in a way the run cannot work around by itself."""


class InputError(ConfigError, TypeError):
    """An argument of an API call cannot be used: a tensor's type, shape, dtype or device, a target,
    a seed, or the model's mode (:class:`pipeline.MeaningfulPerturbation`).

    Also a ``ValueError`` and a ``TypeError``, so code that guards a Captum call with either keeps
    working; the CLI shows it as one line like every :class:`PipelineError`."""
