"""MGrounding-630k / LLaMA-Factory ShareGPT JSON, read and written (multi-turn).

One JSON list (or JSON Lines); each record is
`{"id", "images": [...], "conversations": [{"from": "human"|"gpt", "value": ...}, ...]}` with one
`<image>` tag per image, in order, inside the human turns, and boxes written
`<|box_start|>(x1,y1),(x2,y2)<|box_end|>` in Qwen2-VL's 0-1000 space. An optional `system` string
(LLaMA-Factory's system column) or a leading `{"from": "system"}` turn becomes a system turn.

A record becomes one `Sample` whose `turns` keep every turn, with the `<image>` tags removed and
each image's character offset kept, so training renders images exactly where the tags were (as
LLaMA-Factory's Qwen2-VL plugin does) and trains on every assistant turn. For evaluation the
record's grounding answer is the first box of the last gpt turn, as the scorer reads it; its image
is the one named last before that box (`Image-N`, `<bbox_id>[N-M]`), else an ordinal in that turn
("the second image"), else the task's convention (`infer_answer_image`, as for MIG-Bench).

Records may carry the extra keys this writer adds (`task`, `answer`, `answer_image`,
`need_format`, `additional_info`, `meta`; LLaMA-Factory ignores them), which makes the round trip
exact; without `task`, records get `default_task` (MGrounding records name none).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional

from mig_data.formats.common import (
    LoadResult,
    convert_records,
    load_json_records,
    record_where,
    require_keys,
    require_type,
    resolve_images,
)
from mig_data.formats.mig_bench import infer_answer_image
from mig_data.schema import DataError, Sample, check_box, check_sample
from mig_lab.boxes import QWEN2_BOX, from_grid, parse_response, qwen2_box

IMAGE_TAG = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
FROM = {"user": "human", "assistant": "gpt", "system": "system"}
_ORDINAL = re.compile(r"\b(first|second|third|fourth|fifth|sixth|1st|2nd|3rd|[4-6]th)\s+(?:image|picture|frame)",
                      re.IGNORECASE)
_ORDINAL_INDEX = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "sixth": 5,
                  "1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4, "6th": 5}


def split_image_tags(value: str) -> tuple[str, list[int]]:
    """'<image>\\n<image>\\nQ' -> ('\\n\\nQ', [0, 1]): the text without tags, and each tag's offset."""
    parts = value.split(IMAGE_TAG)
    offsets, pos = [], 0
    for part in parts[:-1]:
        pos += len(part)
        offsets.append(pos)
    return "".join(parts), offsets


def join_image_tags(text: str, offsets: list[int]) -> str:
    """The inverse of `split_image_tags`."""
    out, last = [], 0
    for off in offsets:
        out += [text[last:off], IMAGE_TAG]
        last = off
    out.append(text[last:])
    return "".join(out)


def conversation_to_turns(conv: Any, system: Any, where: str) -> list[dict]:
    """ShareGPT `conversations` -> `Sample.turns` (roles user/assistant, tags removed, offsets kept)."""
    require_type(conv, list, "conversations", where)
    turns = []
    if system:
        turns.append({"role": "system", "content": require_type(system, str, "system", where), "image_offsets": []})
    for k, msg in enumerate(conv):
        if not isinstance(msg, dict) or "from" not in msg or "value" not in msg:
            raise DataError(f"{where}: conversations[{k}] must be an object with 'from' and 'value', got {msg!r:.80}",
                            "bad_conversation")
        role = ROLES.get(msg["from"])
        if role is None:
            raise DataError(f"{where}: conversations[{k}] has from={msg['from']!r}; expected human, gpt or system",
                            "bad_conversation")
        value = require_type(msg["value"], str, f"conversations[{k}].value", where)
        text, offsets = split_image_tags(value)
        if offsets and role != "user":
            raise DataError(f"{where}: conversations[{k}] ({msg['from']}) holds <image> tags; only human turns may",
                            "bad_conversation")
        turns.append({"role": role, "content": text, "image_offsets": offsets})
    roles = [t["role"] for t in turns]
    body = roles[1:] if roles[:1] == ["system"] else roles
    if not body or body != ["user", "assistant"] * (len(body) // 2):
        raise DataError(f"{where}: conversations must alternate human/gpt and end with gpt; got "
                        f"{[FROM[r] for r in roles]}", "bad_conversation")
    return turns


def check_turn_boxes(turns: list[dict], where: str) -> None:
    """Every canonical box in every turn must be in 0-1000 with ordered corners."""
    for k, t in enumerate(turns):
        for m in QWEN2_BOX.finditer(t["content"]):
            check_box(list(from_grid(m.groups())), f"{where} turn {k} box {m.group(0)!r} (0-1000 space)")


def grounding_answer(text: str, task: str, question: str, n_images: int) -> tuple[Optional[list[float]], int]:
    """(first box of `text` normalised, 0-based image it belongs to), read by the scorer
    (`mig_lab.boxes.parse_response`: inside the last `<answer>` block if there is one); the box is
    None when the turn has none (understanding data)."""
    parsed = parse_response(text, "qwen2_vl")
    image = parsed.image
    if image is None:
        o = _ORDINAL.search(text)
        image = _ORDINAL_INDEX[o.group(1).lower()] if o else None
    if image is None:
        image = infer_answer_image(task, question, "", n_images)
    return (list(parsed.box) if parsed.box is not None else None), image


def record_to_sample(rec: Any, index: int, path: Path, root: Path, default_task: str = "free_form",
                     check_images: bool = True, verify_images: str = "none") -> Sample:
    where = record_where(path, index, rec)
    require_keys(rec, ("images", "conversations"), where,
                 "a ShareGPT record has 'images' and 'conversations' (and usually 'id')")
    images = resolve_images(rec["images"], root, where, check_images, verify_images)
    turns = conversation_to_turns(rec["conversations"], rec.get("system"), where)
    n_tags = sum(len(t["image_offsets"]) for t in turns)
    if n_tags != len(images):
        raise DataError(f"{where}: {n_tags} <image> tag(s) in the human turns but {len(images)} image(s)",
                        "image_count_mismatch")
    check_turn_boxes(turns, where)
    task = require_type(rec.get("task", default_task), str, "task", where)
    question = turns[-2]["content"].strip()
    response = turns[-1]["content"]
    box, image = grounding_answer(response, task, question, len(images))
    if "answer" in rec:  # written by `write_sharegpt`: exact, not re-parsed from rounded text
        box = rec["answer"]
    if rec.get("answer_image") is not None:
        image = require_type(rec["answer_image"], int, "answer_image", where)
    elif box is None:
        image = None  # a text answer (understanding) belongs to no image
    sample = Sample(
        id=str(rec.get("id", f"sharegpt-{index}")),
        task=task,
        images=images,
        question=question,
        answer=box,
        answer_image=image,
        response=response,
        need_format=bool(rec.get("need_format", False)),
        additional_info=require_type(rec.get("additional_info", ""), str, "additional_info", where),
        meta=require_type(rec.get("meta") or {}, dict, "meta", where),
        turns=turns,
    )
    return check_sample(sample, where)


def read_sharegpt(path: str | Path, root: Optional[str | Path] = None, on_error: str = "raise",
                  default_task: str = "free_form", check_images: bool = True,
                  verify_images: str = "none") -> LoadResult:
    """Read a ShareGPT / MGrounding file (`.json` list or `.jsonl`). Image paths resolve against
    `root` (default: the file's folder)."""
    path = Path(path)
    root = Path(root) if root else path.parent
    return convert_records(
        load_json_records(path),
        lambda rec, i: record_to_sample(rec, i, path, root, default_task, check_images, verify_images),
        str(path), on_error)


def sample_conversation(s: Sample) -> list[dict[str, str]]:
    """A sample as ShareGPT turns: its own turns, or one human turn (one `<image>` line per image,
    then the question) and one gpt turn (the response, else the answer box)."""
    if s.turns is not None:
        return [{"from": FROM[t["role"]], "value": join_image_tags(t["content"], t["image_offsets"])}
                for t in s.turns]
    if s.response is not None:
        answer = s.response
    elif s.answer is not None:
        answer = qwen2_box(s.answer)
    else:
        raise DataError(f"sample {s.id}: nothing to write as the gpt turn (no response, no answer)")
    return [{"from": "human", "value": f"{IMAGE_TAG}\n" * len(s.images) + s.question},
            {"from": "gpt", "value": answer}]


def sample_to_record(s: Sample, root: Path, extras: bool = True) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": s.id,
        "images": [os.path.relpath(p, root) if os.path.isabs(p) else p for p in s.images],
        "conversations": sample_conversation(s),
    }
    if extras:
        rec.update(task=s.task, answer=s.answer, answer_image=s.answer_image, need_format=s.need_format,
                   additional_info=s.additional_info)
        if s.meta:
            rec["meta"] = s.meta
    return rec


def write_sharegpt(samples: Iterable[Sample], path: str | Path, root: Optional[str | Path] = None,
                   extras: bool = True) -> None:
    """Write a ShareGPT JSON list (LLaMA-Factory's `formatting: sharegpt`, `images` column); image
    paths become relative to `root` (default: the file's folder). `extras=False` writes only the
    keys LLaMA-Factory reads."""
    from mig_lab.records import atomic_write_text

    path = Path(path)
    root = Path(root) if root else path.parent
    records = [sample_to_record(s, root, extras) for s in samples]
    atomic_write_text(path, json.dumps(records, indent=1, ensure_ascii=False) + "\n")

