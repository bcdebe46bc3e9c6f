"""Answering forms (migician Table 10): polling = one prompt per target (MIG-Bench's records as
written); all = one prompt per image group asking for every target, each record scored on its box."""

from __future__ import annotations

import json

import pytest

from mig_data.formats.mig_bench import read_mig_bench
from mig_data.schema import Sample
from mig_eval.answer_forms import all_question, assign_boxes, plan_units, target_slots
from mig_eval.evaluate import evaluate_samples, read_predictions
from mig_models.builders import build_model
from tests.conftest import compose_cfg

CO_Q = "These images share one object in common. Recognize and locate this object in the {}th image. "
OT_Q = ("These are a sequence of images containing moving objects. For the object in the first image marked with "
        "red bounding box(<|box_start|>(139,305),(495,743)<|box_end|>), please locate it in the {}th image. ")
REGION_Q = "You are given a source image followed by its several regions. Please locate the {}th region picture in the source image. "


def sample(task, question, images=("a", "b", "c"), answer_image=0, sid="s", answer=(0.1, 0.1, 0.5, 0.5)):
    return Sample(id=sid, task=task, images=list(images), question=question, answer=list(answer),
                  answer_image=answer_image)


def test_polling_is_one_prompt_per_record_and_all_groups_an_image_group():
    samples = [sample("common_object", CO_Q.format(k + 1), answer_image=k, sid=f"co{k}") for k in range(3)]
    samples.insert(1, sample("diff", "Compare these two images.", images=("x", "y"), answer_image=1))
    samples.append(sample("common_object", CO_Q.format(1), images=("d", "e"), sid="other-group"))
    assert plan_units(samples, "polling") == [[0], [1], [2], [3], [4]]
    assert plan_units(samples, "all") == [[0, 2, 3], [1], [4]]
    with pytest.raises(ValueError, match="answer_form"):
        plan_units(samples, "some")


def test_all_question_asks_for_every_target():
    co = sample("common_object", CO_Q.format(2), answer_image=1)
    q = all_question(co)
    assert "in each of these images: Image-1, Image-2, Image-3." in q and "2th" not in q
    assert q.endswith("each as 'Image-k: ' followed by the box.")
    ot = sample("object_tracking", OT_Q.format(3), images="abcd", answer_image=2)
    assert target_slots(ot) == [1, 2, 3]  # image 1 holds the query
    assert "please locate it in each of these images: Image-2, Image-3, Image-4." in all_question(ot)
    region = sample("region", REGION_Q.format(1), answer_image=0)
    assert "Please locate each region picture (Image-2, Image-3) in the source image." in all_question(region)
    odd = sample("multi_view", "Find the marked object.", answer_image=1)
    assert "Answer for each of these images: Image-2, Image-3." in all_question(odd)


def test_assign_boxes_by_label_then_in_order():
    members = [sample("common_object", CO_Q.format(k + 1), answer_image=k) for k in range(3)]
    labelled = ("Image-3: <|box_start|>(300,300),(400,400)<|box_end|>\n"
                "Image-1: <|box_start|>(100,100),(200,200)<|box_end|>\n"
                "Image-2: <|box_start|>(200,200),(300,300)<|box_end|>")
    boxes = [b for b, _, _ in assign_boxes(labelled, members, "qwen2_vl")]
    assert boxes == [pytest.approx((0.1, 0.1, 0.2, 0.2)), pytest.approx((0.2, 0.2, 0.3, 0.3)),
                     pytest.approx((0.3, 0.3, 0.4, 0.4))]
    plain = "(100,100),(200,200) (200,200),(300,300)"  # no labels: in order; the third target gets none
    got = assign_boxes(plain, members, "qwen2_vl")
    assert [b for b, _, _ in got][:2] == [pytest.approx((0.1, 0.1, 0.2, 0.2)), pytest.approx((0.2, 0.2, 0.3, 0.3))]
    assert got[2][0] is None and got[2][2] is False
    # a label for a non-target image (image 1 of object tracking) does not steal a target's slot; the
    # unclaimed box fills the free target. Scaling is the multi-box rule (a 1 stays 1.0).
    ot = [sample("object_tracking", OT_Q.format(k + 1), answer_image=k) for k in (1, 2)]
    got = assign_boxes("Image-1: (1,1),(2,2) Image-3: (300,300),(400,400)", ot, "qwen2_vl")
    assert got[1][0] == pytest.approx((0.3, 0.3, 0.4, 0.4)) and got[0][0] == pytest.approx((1.0, 1.0, 0.002, 0.002))


def test_assign_boxes_qwen25_maps_each_box_through_its_image():
    hws = [(100, 200), (300, 300), (50, 100)]
    members = [sample("common_object", CO_Q.format(k + 1), answer_image=k) for k in range(3)]
    text = ('Image-1: {"bbox_2d": [20, 10, 100, 50]}\nImage-2: {"bbox_2d": [30, 30, 150, 150]}\n'
            'Image-3: {"bbox_2d": [10, 5, 50, 25]}')
    boxes = [b for b, _, _ in assign_boxes(text, members, "qwen2_5_vl", hws)]
    assert boxes == [pytest.approx((0.1, 0.1, 0.5, 0.5))] * 3
    # region locating: every box lies in the source image (image 1), whatever picture it names
    regions = [sample("region", REGION_Q.format(k), answer_image=0) for k in (1, 2)]
    got = assign_boxes('Image-2: {"bbox_2d": [20, 10, 100, 50]} Image-3: {"bbox_2d": [0, 0, 200, 100]}',
                       regions, "qwen2_5_vl", hws)
    assert [g[1] for g in got] == [0, 0]
    assert got[0][0] == pytest.approx((0.1, 0.1, 0.5, 0.5)) and got[1][0] == pytest.approx((0, 0, 1, 1))


@pytest.fixture(scope="module")
def group_bench(tmp_path_factory):
    """A MIG-Bench-style image group: one MIG-Synth common-object scene asked as 3 polling records."""
    from mig_data.synth.generate import generate_split

    out = tmp_path_factory.mktemp("group")
    cfg = compose_cfg(["data.synth.tasks=[common_object,diff]", "data.synth.n_train=0", "data.synth.n_eval=1",
                       "data.synth.min_images=3", "data.synth.max_images=3"]).data.synth
    generate_split(cfg, seed=0, split="eval", out_dir=out)
    recs = json.loads((out / "eval.json").read_text())
    co, diff = (next(r for r in recs if r["task"] == t) for t in ("common_object", "diff"))
    group = []
    for k in range(3):
        r = dict(co, id=f"co-{k}", answer_image=k, question=CO_Q.format(k + 1))
        r.pop("meta", None)
        group.append(r)
    (out / "bench.json").write_text(json.dumps([group[0], diff, group[1], group[2]]))
    return read_mig_bench(out / "bench.json").samples


def test_all_form_answers_a_group_in_one_prompt_and_resumes(group_bench, tmp_path):
    cfg = compose_cfg(["eval.answer_form=all", "eval.max_new_tokens=6", "eval.batch_size=4"])
    model, processor = build_model(cfg.model, seed=0)
    path = tmp_path / "pred.jsonl"
    preds = evaluate_samples(model, processor, "qwen2_vl", group_bench, cfg.eval, path)
    group = [preds[i] for i in (0, 2, 3)]
    assert all(p["group"] == [0, 2, 3] for p in group)
    assert len({p["response"] for p in group}) == 1 and len({p["prompt"] for p in group}) == 1
    prompt = group[0]["prompt"]
    assert "in each of these images: Image-1, Image-2, Image-3." in prompt and prompt.count("<|vision_start|>") == 3
    assert "Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>" in prompt  # need_format still applies
    assert "group" not in preds[1] and preds[1]["task"] == "diff"  # one-target tasks are asked as is
    # a kill after the first line of the group: only the missing members are redone and written
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:7])
    again = evaluate_samples(model, processor, "qwen2_vl", group_bench, cfg.eval, path)
    assert again == preds
    assert sorted(read_predictions(path)) == [0, 1, 2, 3] and len(path.read_text().splitlines()) == 4


def test_polling_default_matches_the_records(group_bench, tmp_path):
    cfg = compose_cfg(["eval.max_new_tokens=4", "eval.batch_size=4"])
    assert cfg.eval.answer_form == "polling"
    model, processor = build_model(cfg.model, seed=0)
    preds = evaluate_samples(model, processor, "qwen2_vl", group_bench, cfg.eval, tmp_path / "p.jsonl")
    assert [p["id"] for p in preds] == [s.id for s in group_bench]
    assert all("group" not in p and "prompt" not in p for p in preds)
