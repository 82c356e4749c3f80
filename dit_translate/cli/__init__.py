"""Command line: ``python -m dit_translate COMMAND ...``, one module per command over ``cli.common``.

User errors (bad image, unknown preset, missing or corrupt weights, out-of-range knobs, not enough
memory, an output that cannot be written) exit with status 2 and one line on stderr, no traceback.
"""

from __future__ import annotations

import sys

from dit_translate.cli import bench, colorize, edit, guide, paired, presets
from dit_translate.cli.common import USER_ERRORS, Parser, quiet_libraries

COMMANDS = (presets, edit, guide, paired, colorize, bench)


def build_parser() -> Parser:
    parser = Parser(prog="python -m dit_translate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print("error:", *str(e).split(), file=sys.stderr)  # one line, whatever a library put in the message
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
