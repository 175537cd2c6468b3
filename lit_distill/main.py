"""Entry point of the ``lit-distill`` command.

``lit-distill configs`` and ``lit-distill --help`` answer without importing torch or Lightning
(seconds of start-up); everything else builds the LightningCLI.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from lit_distill.configs_index import describe_configs
from lit_distill.errors import ConfigAbort, LitDistillError

USAGE = """usage: lit-distill {fit,validate,test} --config CONFIG [OPTIONS]
       lit-distill configs

Dataset distillation (TGDD, DM, MTT, DATM, MCT, DPD) as a PyTorch Lightning application.

  lit-distill configs                        the shipped configs, one line each
  lit-distill fit --config tgdd_digits.yaml  run one (experts are trained first when missing)
  lit-distill fit --config CONFIG --help     every setting of that command
  lit-distill fit --config CONFIG --print_config   every setting, resolved
  lit-distill test --config eval.yaml --model.synthetic PATH   evaluate an exported set

Errors lit-distill raises on purpose are one line (exit status 2); LIT_DISTILL_DEBUG=1 shows the
traceback."""


def main(args: list[str] | None = None) -> None:
    """Run ``lit-distill`` with ``args`` (default: the process arguments).

    Errors lit-distill raises on purpose (missing data or trajectories, mismatched files, a bad
    value in the configuration, also when it is found while a class is instantiated) are printed
    as one message, exit status 2; set ``LIT_DISTILL_DEBUG=1`` for the traceback.
    """
    args = list(sys.argv[1:] if args is None else args)
    if args[:1] == ["configs"]:
        print(describe_configs())
        return
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    _show_progress_messages()
    try:
        from lit_distill.cli import LitDistillCLI, resolve_config_args  # the heavy imports

        with warnings.catch_warnings():
            # Arguments are passed on purpose (config names resolved): not a mistake to warn of.
            warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
            LitDistillCLI(args=resolve_config_args(args))
    except ConfigAbort as abort:
        _fail(abort.error, f" (while building {abort.what})")
    except LitDistillError as err:
        _fail(err)


def _fail(err: BaseException, where: str = "") -> None:
    if os.environ.get("LIT_DISTILL_DEBUG"):
        raise err
    message = " ".join(str(err).split())  # one line, whatever the message holds
    print(f"lit-distill: error{where}: {type(err).__name__}: {message}", file=sys.stderr)
    raise SystemExit(2) from None


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (``main`` may run several times in one
    process, e.g. under a test runner that replaces the stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_progress_messages() -> None:
    """Print lit-distill's INFO messages (skipped experts, files written) like Lightning's, and
    leave out Lightning's advertisement for another logger on every run."""
    logger = logging.getLogger("lit_distill")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    lightning_info = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning_info.addFilter(lambda record: "litlogger" not in record.getMessage())


if __name__ == "__main__":
    main()
