"""A paper table with this codebase's results beside the paper's numbers, from finished runs:

    python scripts/paper_table.py migician_table1 outputs/runs/<experiment>/<time>
    python scripts/paper_table.py --list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from mig_eval.tables import (
    list_tables,
    load_table,
    metrics_from_path,
    render_markdown,
    table_rows,
    write_table,
)
from mig_lab.config import ConfigError


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/paper_table.py",
                                 description="A paper table with this codebase's results beside the paper's numbers.")
    ap.add_argument("name", nargs="?", help="table name (see --list)")
    ap.add_argument("paths", nargs="*", help="[LABEL=]PATH: metrics.json, evaluate-stage folder or run folder")
    ap.add_argument("--beside", action="append", default=[], metavar="LABEL=PAPER_ROW",
                    help="print our row LABEL right under the paper's row PAPER_ROW")
    ap.add_argument("--out", type=Path, default=None, help="folder for <name>.md and <name>.csv")
    ap.add_argument("--list", action="store_true", help="list the transcribed paper tables")
    args = ap.parse_args(argv)
    if args.list or not args.name:
        print("\n".join(f"{n}: {load_table(n)['paper']} {load_table(n)['table']}" for n in list_tables()))
        return 0
    try:
        ours: dict[str, dict] = {}
        for spec in args.paths:
            label, sep, p = spec.partition("=")
            found = metrics_from_path(Path(p if sep else label))
            if sep and len(found) == 1:
                found = {label: next(iter(found.values()))}
            ours.update(found)
        beside = dict(b.split("=", 1) for b in args.beside)
        if args.out:
            md = write_table(args.name, ours, args.out, beside)
        else:
            md = render_markdown(*table_rows(args.name, ours, beside))
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
