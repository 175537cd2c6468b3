"""Entry point of the ``lit-distill`` command.

``lit-distill configs`` and ``lit-distill --help`` answer without importing torch or Lightning
(seconds of start-up); everything else builds the LightningCLI.
"""

from __future__ import annotations

import os
import sys

from lit_distill.allocator import keep_freed_memory
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
    keep_freed_memory()  # before torch allocates: see lit_distill/allocator.py
    try:
        from lit_distill.cli import LitDistillCLI, resolve_config_args  # the heavy imports
        from lit_distill.console import REPORT, quiet_console

        quiet_console()
        REPORT.start()
        try:
            LitDistillCLI(args=resolve_config_args(args))
        finally:
            REPORT.active = False
    except ConfigAbort as abort:
        _fail(abort.error, f" (while building {abort.what})")
    except LitDistillError as err:
        _fail(err)
    from lightning.pytorch.utilities import rank_zero_only

    summary = REPORT.render()
    if summary and rank_zero_only.rank == 0:  # one summary, not one per DDP rank
        print(summary)


def _fail(err: BaseException, where: str = "") -> None:
    if os.environ.get("LIT_DISTILL_DEBUG"):
        raise err
    message = " ".join(str(err).split())  # one line, whatever the message holds
    print(f"lit-distill: error{where}: {type(err).__name__}: {message}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
    main()
