"""Make every table and figure of the paper from a folder of result files.

    python scripts/make_tables.py outputs/multirun --out outputs/tables [--select best|final]

Reads every result.json and failed.json under the folder (the sweeps write
outputs/multirun/<experiment>/...), writes <out>/<experiment>/tables.{md,tex} and the figures,
and <out>/README.md as an index (which also lists the files it could not read: they are left
out and named on stderr, the rest is built). See src/autolora_exp/tables/make.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autolora_exp.errors import UserError
from autolora_exp.tables.load import SELECTIONS
from autolora_exp.tables.load import load_folder
from autolora_exp.tables.make import build, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="folder holding the runs (e.g. outputs/multirun)")
    parser.add_argument("--out", type=Path, default=Path("outputs/tables"), help="where to write the tables")
    parser.add_argument("--select", choices=SELECTIONS, default="best",
                        help="dev score of the best epoch (the LoRA paper's convention) or of the last")
    args = parser.parse_args(argv)
    try:
        col = load_folder(args.results, select=args.select)
        written = write(col, build(col), args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, why in col.unreadable:  # listed in the index too; the tables are built from the rest
        print(f"warning: unreadable, left out: {path}: {why}", file=sys.stderr)
    total = sum(len(files) for files in written.values())
    print(f"{len(written)} experiment(s), {total} file(s) -> {args.out}/README.md")
    for experiment, files in written.items():
        print(f"  {experiment}: " + ", ".join(p.name for p in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
