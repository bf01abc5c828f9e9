"""The command-line reference (docs/cli.md), generated from every command's ``--help``.

``python -m demseg.cli_reference > docs/cli.md`` writes it; ``tests/test_docs.py`` fails when the
file is out of date, so the reference can never drift from the commands.
"""

from __future__ import annotations

import argparse
import os

from demseg.cli import build_parser

WIDTH = 100  # columns argparse wraps help text at, whatever the terminal


def _commands(parser: argparse.ArgumentParser, prefix: str = "demseg"):
    """(command line, parser) for the parser and every sub-command, depth first, in declaration order."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


def reference() -> str:
    """docs/cli.md: the help of every command, in order."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        parts = ["# Command-line reference", "",
                 "Generated from `--help` by `python -m demseg.cli_reference > docs/cli.md`; a test keeps it "
                 "current.", ""]
        commands = list(_commands(build_parser()))
        parts += [f"- [`{line}`](#{line.replace(' ', '-')})" for line, _ in commands[1:]] + [""]
        for line, parser in commands:
            parts += [f"## {line}", "", "```", parser.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


if __name__ == "__main__":
    print(reference(), end="")
