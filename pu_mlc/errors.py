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


class TrainingDiverged(PUMLCError):
    """Training stopped because the loss or the gradients diverged (see ``pu_mlc.engine.step``).

    ``reason`` says what was seen (one line), ``epoch`` (1-based) and ``step`` (1-based, within
    the epoch) where it was seen; the run's ``metrics.json`` records the same as its ``failure``.
    """

    def __init__(self, reason: str, epoch: int, step: int):
        self.reason, self.epoch, self.step = str(reason), int(epoch), int(step)
        super().__init__(f"training diverged at epoch {self.epoch} step {self.step}: "
                         f"{self.reason}; lower --lr (or use --precision fp32/bf16) and start a "
                         f"new run")

    def __reduce__(self):              # picklable with its fields (Ray sends errors by pickle)
        return type(self), (self.reason, self.epoch, self.step)
