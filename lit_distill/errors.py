"""Exceptions that tell the user what was wrong and what to do about it.

Each subclasses the built-in exception a caller would naturally catch
(``FileNotFoundError`` or ``ValueError``), so generic handlers keep working.
"""


class LitDistillError(Exception):
    """Base class of every error raised on purpose by lit-distill."""


class DatasetNotFoundError(LitDistillError, FileNotFoundError):
    """A dataset's files are missing (and downloading was not asked for)."""


class DatasetFormatError(LitDistillError, ValueError):
    """A dataset exists but its content is unusable (missing keys, wrong dtype or shape, ...)."""


class TrajectoryNotFoundError(LitDistillError, FileNotFoundError):
    """No (complete) expert trajectories where a configuration expects them."""


class TrajectoryMismatchError(LitDistillError, ValueError):
    """A trajectory was trained for another architecture, dataset or number of classes."""


class TrajectoryCorruptError(LitDistillError, ValueError):
    """A trajectory file cannot be read back (truncated, altered or not a trajectory)."""


class SyntheticSetError(LitDistillError, ValueError):
    """A synthetic-set file is unusable or belongs to another dataset."""


class SyntheticSetNotFoundError(LitDistillError, FileNotFoundError):
    """No synthetic-set file where one was given."""


class ConfigNotFoundError(LitDistillError, FileNotFoundError):
    """A ``--config`` value is neither a file nor the name of a shipped config."""


class SettingError(LitDistillError, ValueError):
    """A setting that cannot hold with the data or experts a run meets at set-up."""


class DivergenceError(LitDistillError, FloatingPointError):
    """A run produced a non-finite loss, gradient or parameter, or a non-positive learned lr."""


class ConfigAbort(BaseException):
    """Carries an error raised while the command line instantiates a class, past the argument
    parser (which would otherwise turn it into a dump of the whole configuration); the
    ``lit-distill`` command prints ``error`` as one line."""

    def __init__(self, error: BaseException, what: str) -> None:
        super().__init__(str(error))
        self.error, self.what = error, what
