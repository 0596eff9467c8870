"""``west kilolearn ...``: the kilolearn command line inside a west workspace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from west.commands import WestCommand


class Kilolearn(WestCommand):
    def __init__(self) -> None:
        super().__init__("kilolearn", "kilolearn host tooling",
                         "Runs the kilolearn CLI (the same code as the `kilolearn` command).",
                         accepts_unknown_args=True)

    def do_add_parser(self, parser_adder):  # type: ignore[no-untyped-def]
        p = parser_adder.add_parser(self.name, help=self.help, description=self.description,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("args", nargs=argparse.REMAINDER, help="kilolearn arguments")
        return p

    def do_run(self, args, unknown):  # type: ignore[no-untyped-def]
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from kilolearn.cli import main

        rc = main(list(args.args) + list(unknown))
        if rc:
            self.die(f"kilolearn exited with {rc}")
