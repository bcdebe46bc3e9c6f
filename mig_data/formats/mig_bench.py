"""MIG-Bench's file format (public Migician repo, `eval/MIG-Bench/MIG_data.json`), read and written.

One JSON list; each item has `task`, `images` (2-6 paths relative to a root folder), `question`,
`answer` (x1, y1, x2, y2 normalised to [0, 1]), `additional_info` and `need_format`. MIG-Synth
writes the same format (plus optional `id`, `answer_image`, `response`, `meta`), so one reader
serves the real benchmark and the synthetic one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional

from mig_data.formats.common import (
    LoadResult,
    check_turns,
    convert_records,
    load_json_records,
    record_where,
    require_keys,
    require_type,
    resolve_images,
)
from mig_data.schema import Sample, check_sample

__all__ = ["LoadResult", "load_json_list", "infer_answer_image", "record_to_sample", "read_mig_bench",
           "sample_to_record", "write_mig_bench"]

REQUIRED_KEYS = ("task", "images", "question", "answer")
_ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "sixth": 5, "last": -1}


def load_json_list(path: Path) -> list[Any]:
    """The records of a JSON list file (malformed JSON fails naming line and column)."""
    return load_json_records(Path(path))


def infer_answer_image(task: str, question: str, additional_info: str, n_images: int) -> int:
    """Which image MIG-Bench's answer box belongs to, from the question's own wording."""
    text = f"{question} {additional_info}"
    m = re.search(r"in the (\d{1,9})th (?:image|frame)", question) or re.search(r"in the (\d{1,9})(?:st|nd|rd|th) image", question)
    if m:
        return min(int(m.group(1)) - 1, n_images - 1)
    if task == "group_grounding":
        m = re.search(r"It is in the (\w+) image", additional_info)
        if m and m.group(1).lower() in _ORDINALS:
            idx = _ORDINALS[m.group(1).lower()]
            return idx if idx >= 0 else n_images - 1
        m = re.search(r"[Ii]mage[- ]?(\d{1,9})\b", additional_info)
        if m:
            return int(m.group(1)) - 1
    if task == "region":
        return 0  # the source image comes first, its regions after
    if task in ("diff", "view_diff", "refer_grounding", "correspondence", "reasoning"):
        return 1 if n_images > 1 else 0
    if "second image" in text or "image-2" in text.lower():
        return 1
    return 0


def record_to_sample(rec: Any, index: int, path: Path, root: Path, check_images: bool = True,
                     verify_images: str = "none") -> Sample:
    where = record_where(path, index, rec)
    require_keys(rec, REQUIRED_KEYS, where, f"a MIG-Bench record has {list(REQUIRED_KEYS)}")
    task = require_type(rec["task"], str, "task", where)
    question = require_type(rec["question"], str, "question", where)
    additional = require_type(rec.get("additional_info") or "", str, "additional_info", where)
    images = resolve_images(rec["images"], root, where, check_images, verify_images)
    answer_image = rec.get("answer_image")
    if answer_image is None:
        answer_image = infer_answer_image(task, question, additional, len(images))
    require_type(answer_image, int, "answer_image", where)
    turns = rec.get("turns")
    sample = Sample(
        id=str(rec.get("id", f"{task}-{index}")),
        task=task,
        images=images,
        question=question,
        answer=rec["answer"],
        answer_image=answer_image,
        response=require_type(rec["response"], str, "response", where) if rec.get("response") is not None else None,
        need_format=bool(rec.get("need_format", True)),
        additional_info=additional,
        meta=require_type(rec.get("meta") or {}, dict, "meta", where),
        turns=check_turns(turns, len(images), where) if turns is not None else None,
    )
    return check_sample(sample, where)


def read_mig_bench(path: str | Path, root: Optional[str | Path] = None, on_error: str = "raise",
                   check_images: bool = True, verify_images: str = "none") -> LoadResult:
    """Read a MIG-Bench-format file. Image paths resolve against `root` (default: the file's folder);
    `verify_images`: none | header | full (`mig_data.formats.common.verify_image`: corrupt files fail here)."""
    path = Path(path)
    root = Path(root) if root else path.parent
    return convert_records(load_json_records(path),
                           lambda rec, i: record_to_sample(rec, i, path, root, check_images, verify_images),
                           str(path), on_error)


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
    if s.turns is not None:
        rec["turns"] = s.turns
    return rec


def write_mig_bench(samples: Iterable[Sample], path: str | Path, root: Optional[str | Path] = None) -> None:
    """Write a MIG-Bench-format JSON list; image paths become relative to `root` (default: its folder)."""
    from mig_lab.records import atomic_write_text

    path = Path(path)
    root = Path(root) if root else path.parent
    records = [sample_to_record(s, root) for s in samples]
    atomic_write_text(path, json.dumps(records, indent=1) + "\n")
