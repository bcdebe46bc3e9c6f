"""Tiny data files written by the format, bad-input and mixture tests (images, ShareGPT, COCO)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_corrupt_image(path: Path) -> Path:
    """A PNG cut short: it opens (signature and header intact), its pixel data ends early."""
    write_image(path, (64, 48))
    data = path.read_bytes()
    path.write_bytes(data[:60])
    return path


MULTI_TURN = {
    "id": "mt-1",
    "images": ["img/a.png", "img/b.png", "img/c.png"],
    "conversations": [
        {"from": "human", "value": "<image>\n<image>\nWhich image shows the red circle?"},
        {"from": "gpt", "value": "Image-2: <|box_start|>(100,200),(300,400)<|box_end|>"},
        {"from": "human", "value": "Now look at this one too: <image> Where is it here?"},
        {"from": "gpt", "value": "In Image-3 it is at <|box_start|>(500,500),(700,900)<|box_end|>."},
    ],
}


def sharegpt_records() -> list[dict]:
    """Four MGrounding-style records: multi-turn, single-turn with an ordinal, with a task rule,
    and a text-only (understanding) answer."""
    return [
        MULTI_TURN,
        {"id": "st-ordinal", "images": ["img/a.png", "img/b.png"],
         "conversations": [
             {"from": "human", "value": "<image>\n<image>\nFind the object that differs."},
             {"from": "gpt", "value": "It is in the second image: <|box_start|>(10,20),(30,40)<|box_end|>"}]},
        {"id": "st-task", "task": "region", "images": ["img/a.png", "img/b.png"],
         "conversations": [
             {"from": "human", "value": "<image><image>Locate the region of the second image in the first."},
             {"from": "gpt", "value": "<|box_start|>(0,0),(500,500)<|box_end|>"}]},
        {"id": "text-only", "images": ["img/c.png"],
         "conversations": [
             {"from": "human", "value": "<image>\nHow many shapes are there?"},
             {"from": "gpt", "value": "There are three shapes."}]},
    ]


IMAGE_SIZES = {"a.png": (80, 48), "b.png": (224, 56), "c.png": (56, 168)}  # (width, height)


def write_sharegpt_dataset(root: Path, records: list[dict] | None = None, name: str = "mg.json") -> Path:
    for image, size in IMAGE_SIZES.items():  # different shapes: per-image box mapping must matter
        write_image(root / "img" / image, size)
    path = root / name
    path.write_text(json.dumps(sharegpt_records() if records is None else records, indent=1))
    return path


def coco_instances() -> dict:
    """Two images: image 1 has a cat and two dogs, image 2 a person and a crowd of buses."""
    return {
        "images": [{"id": 1, "file_name": "one.png", "width": 200, "height": 100},
                   {"id": 2, "file_name": "two.png", "width": 80, "height": 160}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "person"},
                       {"id": 4, "name": "bus"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [20, 10, 60, 40], "area": 2400, "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 2, "bbox": [100, 50, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 21, "image_id": 2, "category_id": 3, "bbox": [8, 16, 40, 80], "area": 3200, "iscrowd": 0},
            {"id": 22, "image_id": 2, "category_id": 4, "bbox": [0, 0, 80, 20], "area": 1600, "iscrowd": 1},
        ],
    }


def write_coco_dataset(root: Path, instances: dict | None = None, refs: list | None = None) -> tuple[Path, Path]:
    """instances.json, refs(unc).p and the two images under `root`."""
    write_image(root / "one.png", (200, 100))
    write_image(root / "two.png", (80, 160))
    inst = root / "instances.json"
    inst.write_text(json.dumps(coco_instances() if instances is None else instances))
    refs_path = root / "refs(unc).p"
    if refs is None:
        refs = [
            {"ref_id": 0, "ann_id": 11, "image_id": 1, "category_id": 1, "split": "train",
             "file_name": "COCO_train2014_000000000001_11.jpg", "sent_ids": [100, 101],
             "sentences": [{"sent_id": 100, "sent": "cat on the left", "raw": "Cat on the left", "tokens": []},
                           {"sent_id": 101, "sent": "the small cat", "raw": "the small cat", "tokens": []}]},
            {"ref_id": 1, "ann_id": 13, "image_id": 1, "category_id": 2, "split": "val",
             "file_name": "COCO_train2014_000000000001_13.jpg", "sent_ids": [102],
             "sentences": [{"sent_id": 102, "sent": "dog on the right", "raw": "dog on the right", "tokens": []}]},
        ]
    with open(refs_path, "wb") as f:
        pickle.dump(refs, f)
    return inst, refs_path
