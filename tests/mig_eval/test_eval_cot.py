"""The Migician CoT baselines: the paper's step-1/step-2 templates, what each step really shows the
model (recorded from the token ids), where step 2's box coordinates live, and resume."""

from __future__ import annotations

import pytest

from mig_data.loading import load_split
from mig_data.schema import MIG_TASKS, DataError, Sample
from mig_eval import cot_baselines as cot
from mig_eval.evaluate import check_eval_config, evaluate_samples, score_step2
from mig_lab.config import ConfigError
from mig_models.builders import build_model
from tests.conftest import compose_cfg

FORMAT = "Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate additional words."


@pytest.fixture(scope="module")
def ten_tasks(tmp_path_factory):
    from mig_data.synth.generate import generate_split

    out = tmp_path_factory.mktemp("ten")
    cfg = compose_cfg([f"data.synth.tasks=[{','.join(MIG_TASKS)}]", "data.synth.n_train=0",
                       "data.synth.n_eval=1"]).data.synth
    generate_split(cfg, seed=0, split="eval", out_dir=out)
    return {s.task: s for s in load_split(out, "eval")}


def test_step1_questions_are_the_papers_templates(ten_tasks):
    q = {t: cot.step1_question(s) for t, s in ten_tasks.items()}
    # the paper's appendix text, word for word
    assert q["diff"] == ("Compare these two images carefully and tell me where does they differ. Please answer "
                         "briefly in single phrase or words.")
    assert q["view_diff"] == ("Compare these two images carefully and describe the prominent different object with "
                              "really simple words or phrase.")
    assert q["refer_grounding"] == "Watch carefully and briefly describe the object in the Image-1."
    assert q["common_object"] == ("These images share one object in common. Recognize it and tell me its name in "
                                  "single phrase or words.")
    assert q["object_tracking"] == "Describe the object in the first image marked with red bounding box with simple phrase."
    # region: the "XXXth picture" is the asked region picture, counting the source image as the 1st
    assert "1th region picture" in ten_tasks["region"].question
    assert q["region"] == "Describe the content of the 2th picture with simple phrase or words."
    # multi-view: the red box's coordinates come from the question
    box = ten_tasks["multi_view"].question.split("first image(")[1].split(")).")[0]
    assert q["multi_view"] == (f"Describe the object in the first image marked with red bounding box({box}) with "
                               "simple phrase or word. You can refer to other images for more precise recognition "
                               "and description.")
    gg = ten_tasks["group_grounding"]
    choices = " | ".join(f"Image{k + 1}" for k in range(len(gg.images)))
    assert q["group_grounding"] == f"{gg.question} Just recognize and tell me which image is it in. Answer from: {choices}."
    assert q["reasoning"].endswith("in image-1. Name this object in the Image-2 with simple phrase.")
    assert "Find it and locate it in the second image" not in q["reasoning"]
    assert q["correspondence"] == ("For the first image, describe the semantic/functional feature of the area marked "
                                   "by the red bounding box.")


def test_step2_questions_fill_the_description(ten_tasks):
    r = "  the red cube.<|im_end|>"
    s = ten_tasks["diff"]
    assert cot.step2_question(s, r, "single", 1) == ("According to the object difference/change: the red cube, please "
                                                     "ground this difference with bounding box coordinates.")
    assert cot.step2_question(ten_tasks["refer_grounding"], r, "multi", 1) == (
        "Now ONLY look at the second image. Please find and ground the object <|object_ref_start|>the red cube"
        "<|object_ref_end|> with bounding box coordinates.")
    gg = ten_tasks["group_grounding"]
    assert cot.step2_question(gg, "Image3", "single", 2) == gg.question.strip()
    assert cot.step2_images(gg, "single", 2) == [2] and cot.step2_images(gg, "multi", 2) == list(range(len(gg.images)))


@pytest.mark.parametrize("text, n, expected", [
    ("Image3", 4, 2), ("It is in Image 2.", 4, 1), ("the second image", 4, 1), ("image-4", 4, 3),
    ("Image9", 4, 0), ("I am not sure", 4, 0), ("in the 3th image", 4, 2)])
def test_group_grounding_step1_picks_the_image(text, n, expected):
    assert cot.pick_image(text, n) == expected


def test_config_and_task_errors():
    with pytest.raises(ConfigError, match="eval.cot=single"):
        check_eval_config(compose_cfg(["eval.cot=single", "eval.answer_form=all"]).eval)
    check_eval_config(compose_cfg(["eval.cot=multi", "eval.answer_form=all"]).eval)
    s = Sample(id="x", task="single_grounding", images=["a"], question="Locate it.", answer=[0, 0, 1, 1])
    with pytest.raises(DataError, match="no CoT template for task 'single_grounding'"):
        cot.step1_question(s)


def test_step2_box_refers_to_the_image_step2_saw():
    s = Sample(id="x", task="diff", images=["a", "b"], question="q", answer=[0.1, 0.1, 0.5, 0.5], answer_image=1)
    hws = [(100, 200), (300, 300)]  # (h, w) of image 1 and image 2 as the model saw them
    text = '{"bbox_2d": [30, 30, 150, 150]}'  # pixels of image 2
    single = score_step2(s, text, [hws[1]], 1, "single", "qwen2_5_vl")  # step 2 saw only image 2
    assert single["iou"] == pytest.approx(1.0) and single["box_image"] == 1 and single["image"] == 1
    multi = score_step2(s, text, hws, 1, "multi", "qwen2_5_vl")  # saw both; told to look at image 2
    assert multi["iou"] == pytest.approx(1.0) and multi["box_image"] == 1
    named = score_step2(s, 'Image-1: {"bbox_2d": [30, 30, 150, 150]}', hws, 1, "multi", "qwen2_5_vl")
    assert named["box_image"] == 0 and named["iou"] < 0.5  # an explicitly named image is honoured
    # in single mode any image the answer names is moot: it saw one image
    named_single = score_step2(s, 'Image-2: {"bbox_2d": [30, 30, 150, 150]}', [hws[1]], 1, "single", "qwen2_5_vl")
    assert named_single["iou"] == pytest.approx(1.0)
    q2 = score_step2(s, "(100,100),(500,500)", [hws[1]], 1, "single", "qwen2_vl")
    assert q2["iou"] == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_each_step_shows_the_model_its_own_prompt(ten_tasks, tmp_path, mode):
    samples = list(ten_tasks.values())
    cfg = compose_cfg([f"eval.cot={mode}", "eval.max_new_tokens=6", "eval.batch_size=5"])
    model, processor = build_model(cfg.model, seed=0)
    path = tmp_path / "pred.jsonl"
    preds = evaluate_samples(model, processor, "qwen2_vl", samples, cfg.eval, path)
    for s, p in zip(samples, preds):
        one, two = p["step1"]["prompt"], p["step2"]["prompt"]
        assert p["cot"] == mode
        assert cot.step1_question(s) in one and one.count("<|vision_start|>") == len(s.images)
        assert "Format:" not in one
        if s.task not in ("group_grounding", "reasoning"):
            assert s.question.strip() not in one  # the published Qwen2 code sent the original question here
        k = cot.step2_image(s, p["step1"]["response"])
        assert k == (s.answer_image if s.task != "group_grounding" else k)
        assert cot.step2_question(s, p["step1"]["response"], mode, k) + " " + FORMAT in two
        assert p["step2"]["images"] == cot.step2_images(s, mode, k)
        assert two.count("<|vision_start|>") == (1 if mode == "single" else len(s.images))
        if mode == "single":
            assert p["image"] == k  # the image step 2 showed is the answer's image
    # resume: a kill after 3 predictions redoes only the rest, with the same results
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n")
    assert evaluate_samples(model, processor, "qwen2_vl", samples, cfg.eval, path) == preds
