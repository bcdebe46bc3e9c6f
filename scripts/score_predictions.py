"""Score predictions made anywhere against a MIG-Bench-format file, with Migician's rules (mig_eval/score.py):

    python scripts/score_predictions.py --bench MIG_data.json --pred preds.jsonl --out metrics.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from mig_data.schema import DataError
from mig_eval.score import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, score_file
from mig_lab.records import atomic_write_json


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/score_predictions.py", description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, type=Path, help="MIG-Bench-format JSON list")
    ap.add_argument("--pred", required=True, type=Path, help='JSONL of {"index": i, "response": text}')
    ap.add_argument("--out", required=True, type=Path, help="metrics.json to write")
    ap.add_argument("--convention", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl"],
                    help="the model family's box coordinates (default qwen2_vl)")
    ap.add_argument("--root", type=Path, default=None, help="folder image paths are relative to (default: the bench's)")
    ap.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS, help="qwen2_5_vl resize lower bound")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="qwen2_5_vl resize upper bound")
    ap.add_argument("--migician-y-rescale", action="store_true", help="the published Migician-only y rescale")
    ap.add_argument("--allow-missing", action="store_true", help="score records without a prediction as no box")
    ap.add_argument("--per-record", type=Path, default=None, help="also write per-record scores (JSONL)")
    args = ap.parse_args(argv)
    try:
        report, records = score_file(args.bench, args.pred, args.convention, args.root, args.min_pixels,
                                      args.max_pixels, args.migician_y_rescale, args.allow_missing)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, report.to_json())
    if args.per_record:
        args.per_record.parent.mkdir(parents=True, exist_ok=True)
        args.per_record.write_text("".join(json.dumps(r) + "\n" for r in records))
    for task, m in report.tasks.items():
        print(f"{task:<16} acc@0.5 {100 * m['acc@0.5']:6.2f}  miou {100 * m['miou']:6.2f}  n {m['n']}")
    print(f"{'overall':<16} acc@0.5 {100 * report.overall['acc@0.5']:6.2f}  (mean of {len(report.tasks)} tasks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
