"""Errors that reach the user.

Every problem a user can fix (a bad flag, a missing file, a malformed annotation) is raised as a
:class:`PUMLCError` subclass *before* expensive work starts. The message names what was wrong,
where (file, field or flag, value) and what to do, so the entry point can print it without a
traceback.
"""


class PUMLCError(ValueError):
    """Base class: a user-fixable problem, printed without a traceback by ``train_entry.py``."""


class ConfigError(PUMLCError):
    """A configuration field (flag or YAML key) has a value we refuse."""


class DataError(PUMLCError):
    """A dataset file (annotation, image, word vectors) is missing or malformed."""


class OutputDirError(PUMLCError):
    """The output directory holds earlier results that a run would overwrite."""
