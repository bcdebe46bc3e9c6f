"""Merge saved model folders outside an experiment (in one, a `merge` stage does it):

    python scripts/merge_models.py A/model B/model --out merged/ [--method task_arithmetic --base BASE --scale 1.0]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from mig_models.merging import merge_folders


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Average (or task-arithmetic merge) saved model folders.")
    ap.add_argument("checkpoints", nargs="+", type=Path, help="model folders (or LoRA adapter folders with --base)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--method", choices=["average", "task_arithmetic"], default="average")
    ap.add_argument("--weights", type=lambda s: [float(x) for x in s.split(",")], default=None)
    ap.add_argument("--base", type=Path, default=None, help="base model folder (task arithmetic, LoRA adapters)")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    out = merge_folders(args.checkpoints, args.out, args.method, args.weights, args.base, args.scale)
    print(f"merged {len(args.checkpoints)} checkpoint(s) -> {out}")


if __name__ == "__main__":
    main()
