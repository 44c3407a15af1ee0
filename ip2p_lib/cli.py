"""The `ip2p` command. Each subcommand lives beside the code it drives.

A module in `COMMAND_MODULES` defines `register(subparsers)`, which adds its parser and sets
`func` (a callable taking the parsed args and returning an exit code). Modules import their
heavy dependencies inside `func`, so `ip2p --help` is fast.

Every mistake a user can make ends the same way: one line on stderr and exit code 2. That is
argparse's own errors (an unknown option, `--n abc`) and every `UserError` a command raises;
the checks of paths and numbers live in `ip2p_lib.infra.checks`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Iterator, NoReturn, Sequence

from ip2p_lib.infra.errors import UserError

COMMAND_MODULES: list[str] = [
    "ip2p_lib.toyworld.cli",  # ip2p world
    "ip2p_lib.infra.runner",  # ip2p notebooks
    "ip2p_lib.editor.cli",  # ip2p edit
    "ip2p_lib.text.cli",  # ip2p text
    "ip2p_lib.dataset.cli",  # ip2p pairs
    "ip2p_lib.training.cli",  # ip2p train
    "ip2p_lib.results.cli",  # ip2p figures
    "ip2p_lib.toyworld.pretrain.cli",  # ip2p toy pretrain
]


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (the hint names `--help`), exit 2.

    Subparsers inherit the class, so every `ip2p ...` command reports errors the same way."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = OneLineParser(
        prog="ip2p",
        description="InstructPix2Pix, step by step: the miniature world, the notebooks and the editor.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in iter_parsers(parser):
        if command.get_default("func") is not None:  # a command that runs: errors name it in full
            command.set_defaults(command_prog=command.prog)
    return parser


def iter_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every subparser below it (each once, aliases included only once)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from iter_parsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn a `UserError` into one line and exit code 2.

    Returns the exit code, also for `--help` (0) and usage errors (2), so tests can call it."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed as one line
        return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        one_line = " ".join(str(err).split())  # a message quoting a library's error may hold newlines
        print(f"{args.command_prog}: error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args.command_prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
