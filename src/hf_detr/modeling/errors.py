"""The errors of bad input. `hf-detr` prints their message on one line; any other exception is a bug and keeps its
traceback. They subclass `ValueError` and `TypeError`, so callers that catch those still do."""


class HfDetrInputError(ValueError):
    """A value given to hf_detr (a flag, a file, a data set, an argument) that it cannot use; the message names it
    and the fix."""


class HfDetrInputTypeError(HfDetrInputError, TypeError):
    """An argument of the wrong type."""


class HfDetrFileNotFoundError(HfDetrInputError, FileNotFoundError):
    """A file or folder that was named but is not there."""
