"""What lit-distill prints while it runs, and what it keeps quiet.

A command has up to three phases: training experts, distilling, evaluating. Each shows ONE
status line on stderr (:class:`PhaseProgressBar`, Lightning's progress bar replaced), rewritten
in place on a terminal and printed every ``log_every_s`` seconds when stderr is a file (a log,
CI); a finished expert leaves one line with its accuracy and file. Lightning's banners (which
accelerators exist) are printed once per command (:func:`quiet_console`), not once per expert;
the runner prints the model summary of the first expert only. Warnings of dependencies that a
user cannot act on are filtered in one place, each with its reason
(:data:`DEPENDENCY_WARNINGS`). At the end of a command, :data:`REPORT` prints one summary: the
files written, the accuracy table and the wall time of each phase.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import ProgressBar

# ---------------------------------------------------------------------- warnings
#: (message regex, category, module regex, why it is filtered). Warnings a user can act on (a
#: GPU left unused, a precision setting, a wrong value) are never listed here.
DEPENDENCY_WARNINGS: list[tuple[str, type[Warning], str, str]] = [
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        "",
        "Lightning's own pytree helper calls a torch API that torch deprecated; every run "
        "triggers it and only a Lightning release can change it",
    ),
    (
        r"You passed in a `val_dataloader` but have no `validation_step`",
        UserWarning,
        "",
        "distillation has no validation loop on purpose (EvaluationCallback evaluates it); the "
        "datamodule's validation split serves expert training",
    ),
    (
        r"Using ModelCheckpoint with manual optimization",
        UserWarning,
        "",
        "distillation checkpoints hold the state after the iteration's update with the "
        "iteration counter that says so: resume is exact (tested)",
    ),
    (
        r"You're resuming from a checkpoint that ended before the epoch ended",
        UserWarning,
        "",
        "a distillation is one endless epoch of iterations whose checkpoints hold the iteration "
        "counter every random stream derives from: a resume goes on exactly (tested), and "
        "lit-distill says so in its own line",
    ),
    (
        r"Checkpoint directory .* exists and is not empty",
        UserWarning,
        "",
        "lit-distill checks a distillation's folders before anything starts: a run already "
        "there is resumed (--ckpt_path) or replaced (--overwrite true) only when asked",
    ),
    (
        r".*does not have many workers",
        UserWarning,
        "",
        "lit-distill's loaders serve images held in memory; worker processes would only copy them",
    ),
    (
        r"LightningCLI's args parameter is intended to run from within Python",
        UserWarning,
        "",
        "lit-distill passes its arguments to LightningCLI on purpose (config names resolved)",
    ),
    (
        r".*",
        DeprecationWarning,
        r"(tensorboard|jsonargparse)(\.|$)",
        "deprecations inside TensorBoard's and jsonargparse's own modules, about their internals",
    ),
]


def quiet_dependency_warnings() -> None:
    """Install the filters of :data:`DEPENDENCY_WARNINGS` (idempotent)."""
    for message, category, module, _why in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message, category, module)


# ---------------------------------------------------------------------- Lightning's messages
#: Lightning messages shown once per process (a new Trainer per expert repeats them).
ONCE = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "Trainer already configured with model summary callbacks",
)
#: Lightning messages never shown: advertisements, the end of every expert's fit (the runner
#: prints a line per finished expert instead), and the restore of a resumed distillation.
NEVER = (
    "litlogger",
    "litmodels",
    "`Trainer.fit` stopped: `max_epochs=",
    # lit-distill says once that a distillation resumes, where and at which iteration
    "Restoring states from the checkpoint path at",
    "Restored all states from the checkpoint",
)


class _OncePerProcess(logging.Filter):
    """Lets each of Lightning's repeated banners through the first time only."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(text in message for text in NEVER):
            return False
        if message.startswith(ONCE):
            if message in self.seen:
                return False
            self.seen.add(message)
        return True


_LIGHTNING_FILTER = _OncePerProcess()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test runner may replace it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def quiet_console() -> None:
    """lit-distill's INFO messages on stderr, Lightning's banners once, dependency warnings
    filtered. Called by the ``lit-distill`` command."""
    logger = logging.getLogger("lit_distill")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _LIGHTNING_FILTER not in lightning.filters:
        lightning.addFilter(_LIGHTNING_FILTER)
    _LIGHTNING_FILTER.seen.clear()  # a new command shows its banners once more
    quiet_dependency_warnings()


# ---------------------------------------------------------------------- durations
def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# ---------------------------------------------------------------------- the summary
#: The phases of a command, in the order the summary lists them.
PHASES = ("experts", "distillation", "evaluation", "fit")


@dataclass
class RunReport:
    """What one command did: wall time per phase, files written, accuracy tables.

    Phases nest (evaluation happens during distillation): the time of a phase excludes the
    phases that run inside it, so the times add up to the command's. Only the ``lit-distill``
    command prints the report (:meth:`render`); library use only collects it.
    """

    active: bool = False  # set by the ``lit-distill`` command, which prints the report
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    _stack: list[list[Any]] = field(default_factory=list)  # [name, started, -paused]

    def start(self) -> None:
        """Forget everything; collect for a command that prints the report at its end."""
        self.seconds.clear(), self.counts.clear(), self.files.clear(), self.tables.clear()
        self._stack.clear()
        self.active = True

    def table(self, text: str, title: str) -> None:
        """A results table: kept for the summary under the command, logged at once otherwise."""
        if self.active:
            self.tables.append(f"{title}\n{text}")
        else:
            logging.getLogger("lit_distill").info("%s\n%s", title, text)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time ``name`` (exclusive of phases nested in it)."""
        now = time.perf_counter()
        if self._stack:
            self._stack[-1][2] += now  # the enclosing phase pauses from now ...
        self._stack.append([name, now, 0.0])
        try:
            yield
        finally:
            _, started, paused = self._stack.pop()
            end = time.perf_counter()
            self.seconds[name] = self.seconds.get(name, 0.0) + end - started + paused
            if self._stack:
                self._stack[-1][2] -= end  # ... to here: minus the nested phase's time

    def file(self, kind: str, path: str | Path) -> None:
        """Record a file (or folder) written, once (relative to the working folder if inside)."""
        path = Path(path)
        if path.is_absolute() and path.is_relative_to(Path.cwd()):
            path = path.relative_to(Path.cwd())
        paths = self.files.setdefault(kind, [])
        if path not in paths:
            paths.append(path)

    def render(self) -> str:
        """The summary, or ``""`` when nothing was recorded."""
        if not (self.seconds or self.files or self.tables):
            return ""
        lines = ["", "Summary"]
        if self.seconds:
            names = sorted(self.seconds, key=lambda n: PHASES.index(n) if n in PHASES else 99)
            phases = [
                f"{name} {duration(self.seconds[name])}"
                + (f" ({self.counts[name]})" if name in self.counts else "")
                for name in names
            ]
            total = duration(sum(self.seconds.values()))
            lines.append(f"  wall time: {', '.join(phases)}; {total} in all")
        for kind, paths in self.files.items():
            lines.append(f"  {kind}: " + _paths(paths))
        for table in self.tables:
            lines.append("")
            lines.extend(table.splitlines())
        return "\n".join(lines)


def _paths(paths: list[Path]) -> str:
    """Paths, those of one folder with a common pattern shortened: ``dir/expert_000.pt …
    expert_099.pt (100 files)``."""
    if len(paths) <= 3:
        return ", ".join(str(p) for p in paths)
    return f"{paths[0]} … {paths[-1].name} ({len(paths)} files)"


#: The report of the command being run.
REPORT = RunReport()


# ---------------------------------------------------------------------- the status line
class StatusLine:
    """One line on ``stream``: rewritten in place on a terminal (at most every ``refresh_s``),
    printed as a new line every ``log_every_s`` otherwise."""

    def __init__(self, refresh_s: float = 0.5, log_every_s: float = 30.0) -> None:
        self.refresh_s, self.log_every_s = refresh_s, log_every_s
        self._last = 0.0
        self._width = 0

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    def _tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        every = self.refresh_s if self._tty() else self.log_every_s
        if not force and now - self._last < every:
            return
        self._last = now
        if self._tty():
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the in-place line (so that a message that follows starts a clean line)."""
        if self._tty() and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self._width, self._last = 0, 0.0


class PhaseProgressBar(ProgressBar):
    """Lightning's progress bar for lit-distill: one status line per phase.

    * experts: ``expert k/N · epoch e/E · s/epoch · ETA (all experts) · last test accuracy``
      (the runner adds one line per finished expert: accuracy, time, file);
    * distillation: ``iteration i/I · loss · learned lr · s/iteration · ETA``;
    * evaluation (:meth:`evaluation`): ``runs done of total``.

    The same instance serves the Trainer of every expert of a command (the ETA covers them all).
    Only rank 0 prints.

    Args:
        refresh_s: seconds between redraws on a terminal.
        log_every_s: seconds between printed lines when stderr is not a terminal.
    """

    def __init__(self, refresh_s: float = 0.5, log_every_s: float = 30.0) -> None:
        super().__init__()
        self.line = StatusLine(refresh_s, log_every_s)
        self.enabled = True
        self._start = 0.0
        self._epoch_start = 0.0
        self._epoch_seconds: list[float] = []
        self._expert_seconds: list[float] = []
        self._first_iteration = 0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def _show(self, trainer: L.Trainer) -> bool:
        return self.enabled and trainer.is_global_zero and not trainer.sanity_checking

    # ------------------------------------------------------------------ both phases
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._epoch_start = time.perf_counter()
        self._epoch_seconds = []
        self._first_iteration = int(getattr(pl_module, "iteration", 0))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    # ------------------------------------------------------------------ experts
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not _is_expert(pl_module):
            return
        self._epoch_seconds.append(time.perf_counter() - self._epoch_start)
        if not self._show(trainer):
            return
        epoch, epochs = trainer.current_epoch + 1, pl_module.recipe.epochs
        per_epoch = sum(self._epoch_seconds) / len(self._epoch_seconds)
        eta = per_epoch * (epochs - epoch) + self._per_expert(per_epoch * epochs) * (
            pl_module.hparams.num_experts - pl_module.expert_index - 1
        )
        parts = [
            f"expert {pl_module.expert_index + 1}/{pl_module.hparams.num_experts}",
            f"epoch {epoch}/{epochs}",
            f"{per_epoch:.1f} s/epoch",
            f"ETA {duration(eta)}",
        ]
        accuracy = trainer.callback_metrics.get("val/acc")
        if accuracy is not None:
            parts.append(f"test acc {100 * float(accuracy):.1f} %")
        self.line.update("  ".join(parts), force=epoch == 1)

    def _per_expert(self, this_one: float) -> float:
        """Seconds per expert: the finished ones' mean, else this one's estimate."""
        done = self._expert_seconds
        return sum(done) / len(done) if done else this_one

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _is_expert(pl_module):  # the runner prints a line per finished expert
            self._expert_seconds.append(time.perf_counter() - self._start)
        self.line.clear()

    # ------------------------------------------------------------------ distillation
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if _is_expert(pl_module) or not hasattr(pl_module, "iteration"):
            return
        if not self._show(trainer):
            return
        done = int(pl_module.iteration)
        total = pl_module.hparams.iterations
        parts = [f"iteration {done}/{total}"]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        lr = getattr(getattr(pl_module, "synthetic", None), "lr", None)
        if lr is not None:
            parts.append(f"lr {float(lr.detach()):.4g}")
        ran = done - self._first_iteration
        if ran > 0:
            per_iteration = (time.perf_counter() - self._start) / ran
            eta = duration(per_iteration * (total - done))
            parts += [f"{per_iteration:.2f} s/it", f"ETA {eta}"]
        self.line.update("  ".join(parts), force=ran == 1)

    # ------------------------------------------------------------------ evaluation
    def evaluation(self, trainer: L.Trainer | None, what: str, done: int, total: int) -> None:
        """Evaluation progress: ``done`` of ``total`` networks trained for ``what``."""
        if not self.enabled or (trainer is not None and not trainer.is_global_zero):
            return
        text = f"evaluation{f' ({what})' if what else ''}: network {done}/{total}"
        self.line.update(text)
        if done == total:
            self.line.clear()


def _is_expert(pl_module: L.LightningModule) -> bool:
    from lit_distill.experts.module import ExpertModule  # the module imports this one

    return isinstance(pl_module, ExpertModule)


def progress_bar(trainer: L.Trainer | None) -> PhaseProgressBar | None:
    """The trainer's :class:`PhaseProgressBar`, if it has one."""
    bar = getattr(trainer, "progress_bar_callback", None) if trainer is not None else None
    return bar if isinstance(bar, PhaseProgressBar) else None
