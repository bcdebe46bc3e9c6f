"""COCO-style annotations through pycocotools, read and written, as `single_grounding` samples.

* Instance files (COCO / Objects365 `instances_*.json`): one sample per non-crowd annotation whose
  category occurs exactly once in its image (crowd annotations count towards "once"), asking
  "Locate <|object_ref_start|>the {category}<|object_ref_end|> in the image." (the S-Grounding
  prompt MIG-Synth's `single_grounding` uses). Annotations of repeated categories are ambiguous
  under that prompt and are left out by rule; the count is logged.
* RefCOCO / RefCOCO+ / RefCOCOg referring expressions (the refer API's `refs(unc).p` pickle plus
  its `instances.json`): one sample per expression (every sentence of every ref, as the RefCOCO
  training sets of Qwen2-VL and Groma use them), optionally only the refs of one split.

Boxes go from COCO's xywh pixels to (x1, y1, x2, y2) normalised by the image's width and height.
COCO has boxes that overshoot the border by a fraction of a pixel; up to `EDGE_TOLERANCE_PX` is
clamped, anything further is a bad record. Image paths are the images' `file_name`s, resolved
against `root` (e.g. the `train2014/` folder). The refs file is a pickle, read with an unpickler that builds plain data only (no classes, no functions).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

from PIL import Image
from pycocotools.coco import COCO

from mig_data.formats.common import LoadResult, convert_records, read_json_file, require_keys, resolve_images
from mig_data.schema import DataError, Sample, check_box, check_sample

log = logging.getLogger("mig_data")

EDGE_TOLERANCE_PX = 1.0
_OBJECT_REF = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>")


def grounding_question(expression: str) -> str:
    return f"Locate <|object_ref_start|>{expression}<|object_ref_end|> in the image."


def load_coco(path: str | Path) -> COCO:
    """A pycocotools `COCO` index of an instances file (malformed JSON fails naming line/column)."""
    path = Path(path)
    data = read_json_file(path)
    require_keys(data, ("images", "annotations", "categories"), str(path),
                 "a COCO instances file has 'images', 'annotations' and 'categories'")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: malformed COCO index entry ({type(e).__name__}: {e}); every image needs "
                            f"'id', every annotation 'id', 'image_id', 'category_id', 'bbox'", "missing_key") from e
    return coco


class PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only (lists, dicts, tuples, strings, numbers, None, booleans: what the refer API's
    refs file holds): any class or function a pickle names is refused, so a file cannot run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}; only plain lists, dicts, strings and numbers load")


def load_refs(path: str | Path) -> list[dict]:
    """The refer API's refs pickle: a list of {ref_id, ann_id, image_id, split, sentences, ...} (plain data
    only: `PlainUnpickler`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found", "missing_file")
    try:
        with open(path, "rb") as f:
            refs = PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, ImportError) as e:
        raise DataError(f"{path}: not a readable refs pickle ({type(e).__name__}: {e})", "malformed_refs") from e
    if not isinstance(refs, list):
        raise DataError(f"{path}: expected a pickled list of refs, got {type(refs).__name__}", "malformed_refs")
    return refs


def coco_box(bbox: Any, width: Any, height: Any, where: str) -> list[float]:
    """COCO [x, y, w, h] pixels -> [x1, y1, x2, y2] normalised (sub-pixel border overshoot clamped)."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise DataError(f"{where}: 'bbox' must be [x, y, w, h] in pixels, got {bbox!r}", "bad_box")
    if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
        raise DataError(f"{where}: its image needs positive 'width' and 'height', got {width!r} x {height!r}",
                        "missing_key")
    x, y, w, h = (float(v) for v in bbox)
    corners = [x, y, x + w, y + h]
    limits = [width, height, width, height]
    corners = [min(max(c, 0.0), lim) if -EDGE_TOLERANCE_PX <= c <= lim + EDGE_TOLERANCE_PX else c
               for c, lim in zip(corners, limits)]
    return check_box([c / lim for c, lim in zip(corners, limits)],
                     f"{where}: bbox {bbox} in a {width}x{height} image ->")


def _image_path(coco: COCO, image_id: Any, root: Path, where: str, check: bool, verify: str) -> tuple[dict, str]:
    img = coco.imgs.get(image_id)
    if img is None:
        raise DataError(f"{where}: image_id {image_id!r} is not in the instances file", "missing_key")
    if "file_name" not in img:
        raise DataError(f"{where}: image {image_id} has no 'file_name'", "missing_key")
    return img, resolve_images([img["file_name"]], root, where, check, verify)[0]


def read_coco_instances(path: str | Path, root: Optional[str | Path] = None, on_error: str = "raise",
                        check_images: bool = True, verify_images: str = "none") -> LoadResult:
    """COCO / Objects365 instances -> one `single_grounding` sample per uniquely named object."""
    path = Path(path)
    root = Path(root) if root else path.parent
    coco = load_coco(path)
    per_image = Counter((a.get("image_id"), a.get("category_id")) for a in coco.dataset["annotations"]
                        if isinstance(a, dict))
    cats = {c["id"]: c.get("name") for c in coco.dataset["categories"] if isinstance(c, dict) and "id" in c}
    rule = Counter()

    def convert(ann: Any, index: int) -> Optional[Sample]:
        where = f"{path} annotation {index}" + (f" (id {ann.get('id')!r})" if isinstance(ann, dict) else "")
        require_keys(ann, ("id", "image_id", "category_id", "bbox"), where, "a COCO annotation has "
                     "'id', 'image_id', 'category_id' and 'bbox'")
        if ann.get("iscrowd"):
            rule["crowd"] += 1
            return None
        if per_image[(ann["image_id"], ann["category_id"])] > 1:
            rule["category repeated in its image"] += 1
            return None
        name = cats.get(ann["category_id"])
        if not isinstance(name, str):
            raise DataError(f"{where}: category_id {ann['category_id']!r} has no name in 'categories'", "missing_key")
        img, image = _image_path(coco, ann["image_id"], root, where, check_images, verify_images)
        box = coco_box(ann["bbox"], img.get("width"), img.get("height"), where)
        sample = Sample(id=f"coco-{ann['id']}", task="single_grounding", images=[image],
                        question=grounding_question(f"the {name}"), answer=box, answer_image=0,
                        need_format=True, meta={"image_id": ann["image_id"], "ann_id": ann["id"], "category": name})
        return check_sample(sample, where)

    result = convert_records(coco.dataset["annotations"], convert, str(path), on_error)
    if rule:
        log.info("%s: %d samples; left out by rule: %s", path, len(result.samples),
                                           ", ".join(f"{n} x {r}" for r, n in rule.items()))
    return result


def read_refcoco(refs_path: str | Path, instances_path: str | Path, root: Optional[str | Path] = None,
                 split: Optional[str] = None, on_error: str = "raise", check_images: bool = True,
                 verify_images: str = "none") -> LoadResult:
    """RefCOCO-style refs (pickle) + instances -> one `single_grounding` sample per expression of
    the refs in `split` (None: every split)."""
    refs_path = Path(refs_path)
    root = Path(root) if root else Path(instances_path).parent
    coco = load_coco(instances_path)
    refs = load_refs(refs_path)
    cats = {c["id"]: c.get("name") for c in coco.dataset["categories"] if isinstance(c, dict) and "id" in c}
    pairs = []  # (ref index, ref, sentence)
    for i, ref in enumerate(refs):
        if split is not None and isinstance(ref, dict) and ref.get("split") != split:
            continue
        sents = ref.get("sentences") if isinstance(ref, dict) else None
        for sent in sents if isinstance(sents, list) and sents else [None]:
            pairs.append((i, ref, sent))

    def convert(pair: tuple, _: int) -> Sample:
        i, ref, sent = pair
        where = f"{refs_path} ref {i}" + (f" (ref_id {ref.get('ref_id')!r})" if isinstance(ref, dict) else "")
        require_keys(ref, ("ref_id", "ann_id", "sentences"), where, "a ref has 'ref_id', 'ann_id', 'sentences'")
        if not isinstance(sent, dict) or not isinstance(sent.get("sent"), str):
            raise DataError(f"{where}: 'sentences' must be a non-empty list of {{sent: str, sent_id}}, got "
                            f"{ref['sentences']!r:.80}", "wrong_type")
        ann = coco.anns.get(ref["ann_id"])
        if ann is None:
            raise DataError(f"{where}: ann_id {ref['ann_id']!r} is not in {instances_path}", "missing_key")
        img, image = _image_path(coco, ann["image_id"], root, where, check_images, verify_images)
        box = coco_box(ann["bbox"], img.get("width"), img.get("height"), where)
        expression = sent["sent"].strip()
        sample = Sample(id=f"refcoco-{ref['ref_id']}-{sent.get('sent_id', 0)}", task="single_grounding",
                        images=[image], question=grounding_question(expression), answer=box, answer_image=0,
                        need_format=True,
                        meta={"ref_id": ref["ref_id"], "ann_id": ref["ann_id"], "image_id": ann["image_id"],
                              "category": cats.get(ann["category_id"]), "expression": expression,
                              "split": ref.get("split")})
        return check_sample(sample, where)

    return convert_records(pairs, convert, f"{refs_path} (split {split or 'all'})", on_error)


def _expression(s: Sample) -> str:
    if s.meta.get("expression"):
        return str(s.meta["expression"])
    m = _OBJECT_REF.search(s.question)
    return m.group(1) if m else s.question


def write_coco(samples: Iterable[Sample], instances_path: str | Path, refs_path: Optional[str | Path] = None,
               root: Optional[str | Path] = None, split: str = "train") -> None:
    """Write single-image grounding samples as a COCO instances file (one annotation each,
    category = `meta["category"]` or "object") and, with `refs_path`, a refer-API refs pickle
    (one ref per sample, its expression the question's object reference). Image paths become
    relative to `root` (default: the instances file's folder)."""
    from mig_lab.records import atomic_write_text

    instances_path = Path(instances_path)
    root = Path(root) if root else instances_path.parent
    images: dict[str, dict] = {}
    categories: dict[str, int] = {}
    annotations, refs = [], []
    for k, s in enumerate(samples):
        if len(s.images) != 1 or s.answer is None:
            raise DataError(f"sample {s.id}: COCO holds single-image samples with an answer box "
                            f"({len(s.images)} images, answer {s.answer})")
        path = s.images[0]
        if path not in images:
            with Image.open(path) as im:
                width, height = im.size
            images[path] = {"id": len(images) + 1, "file_name": os.path.relpath(path, root) if os.path.isabs(path)
                            else path, "width": width, "height": height}
        img = images[path]
        cat = str(s.meta.get("category") or "object")
        cat_id = categories.setdefault(cat, len(categories) + 1)
        x1, y1, x2, y2 = s.answer
        w, h = img["width"], img["height"]
        bbox = [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h]
        annotations.append({"id": k + 1, "image_id": img["id"], "category_id": cat_id, "bbox": bbox,
                            "area": bbox[2] * bbox[3], "iscrowd": 0})
        expression = _expression(s)
        refs.append({"ref_id": k, "ann_id": k + 1, "image_id": img["id"], "category_id": cat_id, "split": split,
                     "file_name": img["file_name"], "sent_ids": [k],
                     "sentences": [{"sent_id": k, "sent": expression, "raw": expression,
                                    "tokens": expression.split()}]})
    data = {"images": list(images.values()), "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": n} for n, i in categories.items()]}
    atomic_write_text(instances_path, json.dumps(data) + "\n")
    if refs_path is not None:
        refs_path = Path(refs_path)
        tmp = refs_path.with_suffix(refs_path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(refs, f)
        os.replace(tmp, refs_path)

