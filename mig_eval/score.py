"""Score model outputs made anywhere against a MIG-Bench-format file, exactly as the evaluate stage
(and Migician's published scorer) does:

    python scripts/score_predictions.py --bench MIG_data.json --pred preds.jsonl --out metrics.json \
        [--convention qwen2_vl|qwen2_5_vl] [--root DIR] [--min-pixels N] [--max-pixels N]

`--pred` is JSON Lines, one `{"index": i, "response": "..."}` per benchmark record (i = 0-based
position in the bench list; other keys are ignored). Every record needs exactly one prediction
(`--allow-missing` scores absent ones as "no box", IoU 0, and counts them in metrics.json).

Coordinates: `qwen2_vl` (default) reads Qwen2-VL's 0-1000 space (or [0, 1] floats) with Migician's
rules; `qwen2_5_vl` reads absolute pixels of each image *as the model saw it*, so the scorer opens
every image to compute its resize (the family's defaults, min 3,136 and max 12,845,056 pixels, as
in the released Qwen2-VL / Qwen2.5-VL processor configs and qwen-vl-utils; override with the
flags if you ran the model with other limits). Image paths resolve against `--root` (default: the
bench file's folder).

metrics.json: per task `acc@0.5`, `acc@0.3`, `acc@0.7`, `miou`, `n` (plus well-formed fraction and,
for group grounding, image accuracy), the overall average as the papers compute it (the mean of
the per-task scores), the paper groups and difficulty tiers (where the records carry them), and
the scorer settings used. `python scripts/paper_table.py` reads this file like an evaluate stage's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from PIL import Image

from mig_data.formats.mig_bench import read_mig_bench
from mig_data.schema import DataError, Sample
from mig_eval.evaluate import score_response
from mig_eval.metrics import aggregate
from mig_lab.boxes import resized_hw

DEFAULT_MIN_PIXELS = 4 * 28 * 28  # 3,136
DEFAULT_MAX_PIXELS = 16384 * 28 * 28  # 12,845,056


def read_pred_jsonl(path: Path, n_records: int) -> dict[int, str]:
    """index -> response, with errors naming the line for anything malformed."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: prediction file not found")
    preds: dict[int, str] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {lineno}: expected a JSON object, got {type(rec).__name__}")
            if "index" not in rec:
                raise DataError(f"{path} line {lineno}: missing key 'index' (expected {{\"index\": i, \"response\": text}})")
            if "response" not in rec:
                raise DataError(f"{path} line {lineno}: missing key 'response' (expected {{\"index\": i, \"response\": text}})")
            idx, resp = rec["index"], rec["response"]
            if not isinstance(idx, int) or isinstance(idx, bool):
                raise DataError(f"{path} line {lineno}: 'index' must be an integer, got {idx!r}")
            if not 0 <= idx < n_records:
                raise DataError(f"{path} line {lineno}: index {idx} is out of range; the bench file has "
                                f"{n_records} records (indices 0..{n_records - 1})")
            if not isinstance(resp, str):
                raise DataError(f"{path} line {lineno}: 'response' must be a string, got {type(resp).__name__}")
            if idx in preds:
                raise DataError(f"{path} line {lineno}: a second prediction for index {idx}")
            preds[idx] = resp
    return preds


def image_sizes(sample: Sample, min_pixels: int, max_pixels: int, patch_size: int = 14,
                merge_size: int = 2) -> list[tuple[int, int]]:
    """Each image's (h, w) after the Qwen2-VL / Qwen2.5-VL processor's resize (read from the file header)."""
    out = []
    for p in sample.images:
        try:
            with Image.open(p) as im:
                w, h = im.size
        except FileNotFoundError:
            raise DataError(f"sample {sample.id}: image not found: {p}") from None
        except OSError as e:
            raise DataError(f"sample {sample.id}: image {p} is unreadable ({e})") from None
        out.append(resized_hw(w, h, min_pixels, max_pixels, patch_size, merge_size))
    return out


def score_file(bench: Path, pred: Path, convention: str = "qwen2_vl", root: Optional[Path] = None,
               min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS,
               y_rescale: bool = False, allow_missing: bool = False) -> tuple[dict, list[dict]]:
    """Score a prediction file; returns (the report, per-record scores)."""
    if convention not in ("qwen2_vl", "qwen2_5_vl"):
        raise DataError(f"--convention {convention!r}: expected qwen2_vl or qwen2_5_vl")
    samples = read_mig_bench(bench, root=root, check_images=convention == "qwen2_5_vl").samples
    preds = read_pred_jsonl(pred, len(samples))
    missing = [i for i in range(len(samples)) if i not in preds]
    if missing and not allow_missing:
        head = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise DataError(f"{pred}: no prediction for {len(missing)} of {len(samples)} bench records "
                        f"(indices {head}); pass --allow-missing to score them as 'no box'")
    records = []
    for i, s in enumerate(samples):
        hws = image_sizes(s, min_pixels, max_pixels) if convention == "qwen2_5_vl" else []
        rec = score_response(s, preds.get(i, ""), hws, convention, y_rescale)
        records.append({"index": i, **rec, "missing": i not in preds})
    report = aggregate(records)
    report.scorer = {"bench": str(bench), "pred": str(pred), "convention": convention,
                         "min_pixels": min_pixels, "max_pixels": max_pixels, "migician_y_rescale": y_rescale,
                         "missing": len(missing), "rules": "Migician: first box; values >= 1 / 1000; "
                         "no box = IoU 0; correct if IoU >= t"}
    return report, records
