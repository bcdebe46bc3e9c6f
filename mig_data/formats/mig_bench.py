"""MIG-Bench's file format (public Migician repo, `eval/MIG-Bench/MIG_data.json`), read and written.

One JSON list; each item has `task`, `images` (2-6 paths relative to a root folder), `question`,
`answer` (x1, y1, x2, y2 normalised to [0, 1]), `additional_info` and `need_format`. MIG-Synth
writes the same format (plus optional `id`, `answer_image`, `response`, `meta`), so one reader
serves the real benchmark and the synthetic one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from mig_data.schema import DataError, Sample, check_sample

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("task", "images", "question", "answer")
_ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "sixth": 5, "last": -1}


@dataclass
class LoadResult:
    samples: list[Sample]
    skipped: Counter = field(default_factory=Counter)  # reason -> count (data.on_error=skip)

    def report(self, source: str) -> None:
        if self.skipped:
            total = sum(self.skipped.values())
            reasons = ", ".join(f"{n} x {r}" for r, n in self.skipped.most_common())
            log.warning("%s: skipped %d bad record(s) (data.on_error=skip): %s", source, total, reasons)


def load_json_list(path: Path) -> list[Any]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def infer_answer_image(task: str, question: str, additional_info: str, n_images: int) -> int:
    """Which image MIG-Bench's answer box belongs to, from the question's own wording."""
    text = f"{question} {additional_info}"
    m = re.search(r"in the (\d+)th (?:image|frame)", question) or re.search(r"in the (\d+)(?:st|nd|rd|th) image", question)
    if m:
        return min(int(m.group(1)) - 1, n_images - 1)
    if task == "group_grounding":
        m = re.search(r"It is in the (\w+) image", additional_info)
        if m and m.group(1).lower() in _ORDINALS:
            idx = _ORDINALS[m.group(1).lower()]
            return idx if idx >= 0 else n_images - 1
        m = re.search(r"[Ii]mage[- ]?(\d+)", additional_info)
        if m:
            return int(m.group(1)) - 1
    if task == "region":
        return 0  # the source image comes first, its regions after
    if task in ("diff", "view_diff", "refer_grounding", "correspondence", "reasoning"):
        return 1 if n_images > 1 else 0
    if "second image" in text or "image-2" in text.lower():
        return 1
    return 0


def record_to_sample(rec: Any, index: int, path: Path, root: Path, check_images: bool = True) -> Sample:
    where = f"{path} record {index}" + (f" (id {rec.get('id')!r})" if isinstance(rec, dict) and "id" in rec else "")
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; a MIG-Bench record has {list(REQUIRED_KEYS)}")
    if not isinstance(rec["images"], list) or not all(isinstance(p, str) for p in rec["images"]):
        raise DataError(f"{where}: 'images' must be a list of paths")
    if not isinstance(rec["question"], str):
        raise DataError(f"{where}: 'question' must be a string")
    images = [str((root / p).resolve()) if not os.path.isabs(p) else p for p in rec["images"]]
    if check_images:
        for p in images:
            if not os.path.isfile(p):
                raise DataError(f"{where}: image not found: {p} (paths are relative to data.root={root})")
    task = rec["task"]
    additional = rec.get("additional_info", "") or ""
    answer_image = rec.get("answer_image")
    if answer_image is None and isinstance(task, str):
        answer_image = infer_answer_image(task, rec["question"], additional, len(images))
    sample = Sample(
        id=str(rec.get("id", f"{task}-{index}")),
        task=task,
        images=images,
        question=rec["question"],
        answer=rec["answer"],
        answer_image=answer_image,
        response=rec.get("response"),
        need_format=bool(rec.get("need_format", True)),
        additional_info=additional,
        meta=rec.get("meta") or {},
    )
    return check_sample(sample, where)


def read_mig_bench(path: str | Path, root: Optional[str | Path] = None, on_error: str = "raise",
                   check_images: bool = True) -> LoadResult:
    """Read a MIG-Bench-format file. Image paths resolve against `root` (default: the file's folder)."""
    path = Path(path)
    root = Path(root) if root else path.parent
    result = LoadResult(samples=[])
    for i, rec in enumerate(load_json_list(path)):
        try:
            result.samples.append(record_to_sample(rec, i, path, root, check_images))
        except DataError as e:
            if on_error != "skip":
                raise
            result.skipped[_reason(str(e))] += 1
            log.debug("skip: %s", e)
    result.report(str(path))
    return result


def _reason(message: str) -> str:
    """The problem part of a DataError message (after the location), for skip counts."""
    body = message.split(": ", 1)[-1]
    return re.sub(r"[-\d.]+|'[^']*'|\[[^\]]*\]", "#", body)[:80]


def sample_to_record(s: Sample, root: Path) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "task": s.task,
        "images": [os.path.relpath(p, root) if os.path.isabs(p) else p for p in s.images],
        "question": s.question,
        "answer": [round(v, 4) for v in s.answer] if s.answer is not None else None,
        "additional_info": s.additional_info,
        "need_format": s.need_format,
        "id": s.id,
        "answer_image": s.answer_image,
    }
    if s.response is not None:
        rec["response"] = s.response
    if s.meta:
        rec["meta"] = s.meta
    return rec


def write_mig_bench(samples: Iterable[Sample], path: str | Path, root: Optional[str | Path] = None) -> None:
    """Write a MIG-Bench-format JSON list; image paths become relative to `root` (default: its folder)."""
    from mig_lab.records import atomic_write_text

    path = Path(path)
    root = Path(root) if root else path.parent
    records = [sample_to_record(s, root) for s in samples]
    atomic_write_text(path, json.dumps(records, indent=1) + "\n")
