"""The `ip2p` command. Each subcommand lives beside the code it drives.

A module in `COMMAND_MODULES` defines `register(subparsers)`, which adds its parser and sets
`func` (a callable taking the parsed args and returning an exit code). Modules import their
heavy dependencies inside `func`, so `ip2p --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ip2p_lib.infra.errors import UserError

COMMAND_MODULES: list[str] = [
    "ip2p_lib.toyworld.cli",  # ip2p world
    "ip2p_lib.infra.runner",  # ip2p notebooks
    "ip2p_lib.editor.cli",  # ip2p edit
    "ip2p_lib.text.cli",  # ip2p text
    "ip2p_lib.toyworld.pretrain.cli",  # ip2p toy pretrain
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ip2p",
        description="InstructPix2Pix, step by step: the miniature world, the notebooks and the editor.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn a `UserError` into one line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"ip2p {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ip2p {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
