"""Where a predicted box went (`picked` in predictions, `picked_*` in metrics): on the named object,
on another object, or on none - told from MIG-Synth's scene graph, so a model that grounds the wrong
object is told apart from one that cannot localise at all."""

from __future__ import annotations

from omegaconf import OmegaConf

from mig_data.synth.generate import make_sample
from mig_eval.evaluate import score_box
from mig_eval.metrics import aggregate, picked_object
from mig_lab.config import SynthConfig


def sample(task, tmp_path, index=0, **overrides):
    cfg = OmegaConf.merge(OmegaConf.structured(SynthConfig), overrides)
    return make_sample(cfg, 0, "eval", task, index, tmp_path / task)


def test_box_on_target_distractor_or_nothing(tmp_path):
    s = sample("single_grounding", tmp_path, min_objects=3, max_objects=3)
    objects = s.meta["scenes"][0]["objects"]
    other = next(o for o in objects if o["oid"] != s.meta["target_oid"])
    assert picked_object(s.meta, s.answer, 0, s.answer, 0) == "target"
    assert picked_object(s.meta, s.answer, 0, other["box"], 0) == "other"
    assert picked_object(s.meta, s.answer, 0, [0.0, 0.0, 0.01, 0.01], 0) == "none"
    assert picked_object(s.meta, s.answer, 0, None, None) == "none"
    # a box that only half covers the target is not a pick of it
    x1, y1, x2, y2 = s.answer
    assert picked_object(s.meta, s.answer, 0, [x1, y1, (x1 + x2) / 2, y2], 0) != "target"


def test_the_right_object_in_the_wrong_image_is_another_object(tmp_path):
    s = next(s for i in range(20) if (s := sample("group_grounding", tmp_path, index=i)).answer_image > 0)
    same_place_elsewhere = picked_object(s.meta, s.answer, s.answer_image, s.answer, 0)
    assert same_place_elsewhere in ("other", "none")
    assert picked_object(s.meta, s.answer, s.answer_image, s.answer, s.answer_image) == "target"


def test_undecidable_without_a_whole_object_answer_or_a_scene_graph(tmp_path):
    region = sample("region", tmp_path)  # the answer is a crop window, not an object
    assert picked_object(region.meta, region.answer, region.answer_image, region.answer, region.answer_image) is None
    s = sample("single_grounding", tmp_path)
    assert picked_object({}, s.answer, 0, s.answer, 0) is None  # external data: no scene graph


def test_metrics_report_the_fractions_per_task(tmp_path):
    samples = [sample("single_grounding", tmp_path, index=i, min_objects=2, max_objects=2) for i in range(4)]
    other = next(o for o in samples[2].meta["scenes"][0]["objects"] if o["oid"] != samples[2].meta["target_oid"])
    boxes = [samples[0].answer, samples[1].answer, other["box"], None]
    preds = [score_box(s, "r", b, None, 0, b is not None) for s, b in zip(samples, boxes)]
    assert [p["picked"] for p in preds] == ["target", "target", "other", "none"]
    m = aggregate(preds).tasks["single_grounding"]
    assert (m["picked_target"], m["picked_other"], m["picked_none"]) == (0.5, 0.25, 0.25)
    assert m["acc@0.5"] == 0.5
