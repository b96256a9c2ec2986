"""Exceptions shared across keras_vessel.

They live in one tiny module so that `preprocessing` and `datasets` can both
raise them without importing each other.
"""


class DatasetError(ValueError):
    """A dataset, image or mask on disk is missing, malformed or inconsistent.

    A subclass of ValueError so that callers catching bad input in general
    still catch it; the message always names the offending file or option.
    """


class OutputError(ValueError):
    """An output folder or file cannot be written; the message names it and says what to do."""


class TrainingError(RuntimeError):
    """Training could not start or had to stop (e.g. the loss became NaN); the message says what to do."""


class PipelineError(RuntimeError):
    """A pipeline (`predict --engine beam`) stopped as a whole, not at one photograph of it; the message
    says in which step and what failed (a file by its path), and what to do."""
