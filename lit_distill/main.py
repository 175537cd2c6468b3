"""Entry point of the ``lit-distill`` command."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from lit_distill.cli import LitDistillCLI, describe_configs, resolve_config_args
from lit_distill.errors import LitDistillError


def main(args: list[str] | None = None) -> None:
    """Run ``lit-distill`` with ``args`` (default: the process arguments).

    Errors lit-distill raises on purpose (missing data or trajectories, mismatched files...)
    are printed as one message, exit status 2; set ``LIT_DISTILL_DEBUG=1`` for the traceback.
    """
    args = list(sys.argv[1:] if args is None else args)
    _show_progress_messages()
    if args[:1] == ["configs"]:
        print(describe_configs())
        return
    try:
        with warnings.catch_warnings():
            # Arguments are passed on purpose (config names resolved): not a mistake to warn of.
            warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
            LitDistillCLI(args=resolve_config_args(args))
    except LitDistillError as err:
        if os.environ.get("LIT_DISTILL_DEBUG"):
            raise
        print(f"lit-distill: error: {type(err).__name__}: {err}", file=sys.stderr)
        raise SystemExit(2) from err


def _show_progress_messages() -> None:
    """Print lit-distill's INFO messages (skipped experts, files written) like Lightning's."""
    logger = logging.getLogger("lit_distill")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


if __name__ == "__main__":
    main()
