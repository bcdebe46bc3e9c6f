"""The query-swap test: the same image asked about two objects; the box must follow the query."""

from __future__ import annotations

import pytest

from mig_data.loading import load_split
from mig_data.synth.generate import generate_split
from mig_eval.query_swap import swap_stats, swapped
from mig_lab.boxes import iou
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def single_images(tmp_path_factory):
    """Single-image grounding with 1-4 objects (so some images have no other object to ask about)."""
    cfg = compose_cfg(["data.synth.tasks=[single_grounding]", "data.synth.n_eval=24", "data.synth.min_objects=1",
                       "data.synth.max_objects=4"]).data.synth
    out = tmp_path_factory.mktemp("single")
    generate_split(cfg, 0, "eval", out)
    return out


def test_swapped_sample_asks_the_same_image_about_another_uniquely_named_object(single_images):
    samples = load_split(single_images, "eval")
    made = 0
    for s in samples:
        t = swapped(s)
        objects = s.meta["scenes"][0]["objects"]
        names = [f"{o['color']} {o['shape']}" for o in objects]
        if t is None:  # only when no other object has a name of its own in the image
            assert all(o["oid"] == s.meta["target_oid"] or names.count(n) > 1 for o, n in zip(objects, names))
            continue
        made += 1
        other = next(o for o in objects if o["oid"] == t.meta["target_oid"])
        assert t.images == s.images and t.id == f"{s.id}-swap" and t.meta["target_oid"] != s.meta["target_oid"]
        assert names.count(t.meta["target"]) == 1 and f"the {t.meta['target']}<" in t.question
        assert t.answer == other["box"] and iou(t.answer, s.answer) < 0.5  # objects never overlap
    assert 0 < made < len(samples)


def test_swap_stats_by_hand():
    on, off = {"iou": 0.9, "box": [0.1, 0.1, 0.3, 0.3]}, {"iou": 0.0, "box": [0.1, 0.1, 0.3, 0.3]}
    other_box = {"iou": 0.8, "box": [0.6, 0.6, 0.9, 0.9]}
    # pair 1 follows the query; pair 2 gives the first object's box for both queries; pair 3 misses once
    stats = swap_stats([on, on, on], [other_box, off, {"iou": 0.1, "box": None}], no_swap=2)
    assert stats == {"pairs": 3, "no_swap": 2, "follows": 1 / 3, "first_right": 1.0, "swap_right": 1 / 3,
                     "same_box": 1 / 3}
    assert swap_stats([], [], no_swap=4) == {"pairs": 0, "no_swap": 4}
