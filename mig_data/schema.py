"""One sample record, shared by every source (MIG-Synth, MIG-Bench, MGrounding/ShareGPT, COCO).

Boxes are (x1, y1, x2, y2) normalised to [0, 1] of the image they belong to. Target text
(`response`) is stored in the canonical Qwen2-VL box syntax and rewritten per model family by the
box codec at collate time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

# MIG-Bench's ten task names (migician.txt, Appendix A). `view_diff` is "robust diff".
MIG_TASKS = (
    "diff",
    "view_diff",
    "common_object",
    "object_tracking",
    "multi_view",
    "region",
    "refer_grounding",
    "group_grounding",
    "reasoning",
    "correspondence",
)
SPONTANEOUS_TASKS = ("diff", "view_diff", "common_object")
REFERENTIAL_TASKS = tuple(t for t in MIG_TASKS if t not in SPONTANEOUS_TASKS)
# Extra task kinds the training mixtures use ("general" data) and free-form / CoT data.
EXTRA_TASKS = ("single_grounding", "understanding", "free_form")
ALL_TASKS = MIG_TASKS + EXTRA_TASKS


class DataError(ValueError):
    """Bad input data: the message names the file, the record (index or id) and the problem.

    `reason` is a short category (e.g. "missing_image", "bad_box") under which
    `data.on_error=skip` counts the records it skips.
    """

    def __init__(self, message: str, reason: str = "bad_record"):
        super().__init__(message)
        self.reason = reason


@dataclass
class Sample:
    id: str
    task: str
    images: list[str]  # absolute paths once loaded
    question: str  # user text, without image placeholders
    answer: Optional[list[float]] = None  # target box, normalised
    answer_image: Optional[int] = None  # 0-based index of the image holding `answer`
    response: Optional[str] = None  # target text (canonical Qwen2-VL boxes); None = rendered from `answer`
    need_format: bool = True  # append the family's box-format instruction to the question
    additional_info: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # scene graph, difficulty inputs, provenance
    # Multi-turn conversations (ShareGPT / MGrounding): [{role, content, image_offsets}] with roles
    # system | user | assistant, `<image>` tags removed from `content` and each image's character
    # offset in it kept (images are numbered in order across turns). None = the single-turn
    # layout (images, then `question`; target = `response` or `answer`).
    turns: Optional[list[dict[str, Any]]] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def check_box(box: Any, where: str) -> list[float]:
    """A valid normalised box, or a DataError naming `where`."""
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise DataError(f"{where}: box must be 4 numbers [x1, y1, x2, y2], got {box!r}", "bad_box")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0.0 <= x1 <= 1.0 and 0.0 <= y1 <= 1.0 and 0.0 <= x2 <= 1.0 and 0.0 <= y2 <= 1.0):
        raise DataError(f"{where}: box {list(box)} is outside the image (coordinates must be in [0, 1])",
                        "box_outside_image")
    if x2 < x1 or y2 < y1:
        raise DataError(f"{where}: box {list(box)} has x2 < x1 or y2 < y1", "box_corners_swapped")
    return [x1, y1, x2, y2]


def check_sample(s: Sample, where: str) -> Sample:
    if s.task not in ALL_TASKS:
        raise DataError(f"{where}: unknown task {s.task!r}; expected one of {list(ALL_TASKS)}", "unknown_task")
    if not s.images:
        raise DataError(f"{where}: a sample needs at least one image")
    if s.answer is not None:
        s.answer = check_box(s.answer, where)
    if s.answer_image is not None and not (0 <= s.answer_image < len(s.images)):
        raise DataError(f"{where}: answer_image {s.answer_image} is out of range for {len(s.images)} images")
    if s.answer is None and s.response is None:
        raise DataError(f"{where}: a sample needs an 'answer' box or a 'response' text")
    return s


def scene_objects(sample: Sample, image: int) -> list[dict]:
    """Objects of a MIG-Synth sample's scene graph (`meta.scenes`) in image `image` (0-based)."""
    scenes = sample.meta.get("scenes") or []
    return list(scenes[image].get("objects", [])) if 0 <= image < len(scenes) else []


def find_object(sample: Sample, image: int, oid: int) -> Optional[dict]:
    """The scene-graph object with id `oid` in image `image`, if any."""
    return next((o for o in scene_objects(sample, image) if o.get("oid") == oid), None)
