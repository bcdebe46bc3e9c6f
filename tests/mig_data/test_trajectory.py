"""MIRG-RL trajectories: the three construction stages, the validator, bbox_id resolution in the scorer,
and the image-aware rewards that read them."""

from __future__ import annotations

import dataclasses
import random

import pytest

from mig_data.collate import target_text
from mig_data.cot.trajectory import (
    FORMS,
    CotDraft,
    ObjectRef,
    build_trajectories,
    mentions,
    reassemble,
    ref,
    trajectory_errors,
)
from mig_data.cot.trajectory_teachers import (
    ModelTrajectoryTeacher,
    OracleTrajectoryTeacher,
    make_trajectory_teacher,
    oracle_draft,
)
from mig_data.loading import load_split
from mig_data.schema import MIG_TASKS
from mig_lab.boxes import BBOX_ID, answer_text, iou, parse_response
from mig_models.builders import build_tiny, save_model
from mig_rl.rewards import REWARDS, score_rewards
from tests.conftest import compose_cfg

MIRG_WEIGHTS = {"mirg_format": 1.0, "image": 1.0, "object": 1.0}


@pytest.fixture(scope="module")
def ten_tasks(tmp_path_factory):
    """Three MIG-Synth train samples of each of the ten MIG-Bench tasks."""
    from mig_data.synth.generate import generate_split

    out = tmp_path_factory.mktemp("ten_tasks")
    cfg = compose_cfg([f"data.synth.tasks=[{','.join(MIG_TASKS)}]", "data.synth.n_train=3"]).data.synth
    generate_split(cfg, seed=0, split="train", out_dir=out)
    return load_split(out, "train")


def _columns(samples, sizes=None, convention="qwen2_vl"):
    return dict(answer=[s.answer for s in samples], answer_image=[s.answer_image for s in samples],
                image_sizes=sizes or [[(112, 112)] * len(s.images) for s in samples],
                convention=[convention] * len(samples))


# ---------------------------------------------------------------------------- construction
def test_oracle_trajectories_of_all_ten_tasks_are_valid_and_answer_the_target(ten_tasks):
    kept, stats = build_trajectories(ten_tasks, OracleTrajectoryTeacher(), "grounded", seed=0)
    assert stats["kept"] == len(ten_tasks) == 30 and stats["rejected"] == {}
    assert set(stats["by_task"]) == set(MIG_TASKS)
    for s, text in kept:
        assert trajectory_errors(text, len(s.images)) == []
        answer = answer_text(text)
        # the answer is the target's bare bbox_id, defined (with its box) in the think part
        assert BBOX_ID.fullmatch(answer.strip()), answer
        n = int(BBOX_ID.search(answer).group(1))
        assert n == s.answer_image + 1
        parsed = parse_response(text)
        assert parsed.image == s.answer_image and iou(parsed.box, s.answer) > 0.95
        # short: the query/marked object, the target and at most one distractor (ids repeat, objects don't)
        assert len(set(BBOX_ID.findall(text))) <= 4


def test_reassembly_numbers_objects_per_image_and_reuses_ids_later():
    text = (f"<think>{ref('red circle', 2)} and {ref('blue star', 1)} and {ref('red square', 2)}; "
            f"{ref('red circle', 2)} wins.</think><answer>{ref('red circle', 2)}</answer>")
    a, b, c = (0.1, 0.1, 0.3, 0.3), (0.5, 0.5, 0.9, 0.9), (0.6, 0.1, 0.8, 0.2)
    refs = [ObjectRef(2, a), ObjectRef(1, b), ObjectRef(2, c), ObjectRef(2, a), ObjectRef(2, a)]
    out = reassemble(text, refs, "grounded")
    assert out == (
        "<think><bbox_id>[2-1]</bbox_id><|object_ref_start|>red circle<|object_ref_end|>"
        "<|box_start|>(100,100),(300,300)<|box_end|> and "
        "<bbox_id>[1-1]</bbox_id><|object_ref_start|>blue star<|object_ref_end|>"
        "<|box_start|>(500,500),(900,900)<|box_end|> and "
        "<bbox_id>[2-2]</bbox_id><|object_ref_start|>red square<|object_ref_end|>"
        "<|box_start|>(600,100),(800,200)<|box_end|>; "
        "<bbox_id>[2-1]</bbox_id> wins.</think><answer><bbox_id>[2-1]</bbox_id></answer>")
    assert trajectory_errors(out, n_images=2) == []


def test_reasoning_only_and_plain_answer_forms(ten_tasks):
    s = next(x for x in ten_tasks if x.task == "group_grounding")
    draft = oracle_draft(s, random.Random(0))
    refs = OracleTrajectoryTeacher().map_objects([s], [draft], 0)[0]
    reasoning = reassemble(draft.text, refs, "reasoning")
    think, answer = reasoning.split("</think>")
    assert "<bbox_id>" not in reasoning and "<|box_start|>" not in think and "<|object_ref_start|>" not in think
    assert f"in Image-{s.answer_image + 1}" in think
    assert answer.startswith(f"<answer>Image-{s.answer_image + 1}: <|box_start|>")
    plain = reassemble(draft.text, refs, "answer")
    assert plain.startswith(f"Image-{s.answer_image + 1}: <|box_start|>") and "<think>" not in plain
    assert iou(parse_response(plain).box, s.answer) > 0.95
    assert trajectory_errors(reasoning, len(s.images)) == []
    assert trajectory_errors(plain, len(s.images), require_think=False) == []


def test_every_form_builds_for_every_task(ten_tasks):
    for form in FORMS:
        kept, stats = build_trajectories(ten_tasks, OracleTrajectoryTeacher(distractor=False), form, seed=0)
        assert stats["kept"] == len(ten_tasks), (form, stats["rejected"])


# ------------------------------------------------------------------------------- validator
GOOD = ("<think>The query is <bbox_id>[1-1]</bbox_id><|object_ref_start|>red star<|object_ref_end|>"
        "<|box_start|>(100,100),(400,400)<|box_end|>. It is <bbox_id>[2-1]</bbox_id><|object_ref_start|>red star"
        "<|object_ref_end|><|box_start|>(500,200),(900,600)<|box_end|>, not <bbox_id>[1-1]</bbox_id>."
        "</think><answer><bbox_id>[2-1]</bbox_id></answer>")
DEF_21 = "<bbox_id>[2-1]</bbox_id><|object_ref_start|>red star<|object_ref_end|><|box_start|>(500,200),(900,600)<|box_end|>"


@pytest.mark.parametrize("text, reason", [
    (GOOD.replace("<answer><bbox_id>[2-1]", "<answer><bbox_id>[2-3]"), "undefined_id"),
    ("<think>First <bbox_id>[2-1]</bbox_id>, then " + DEF_21 + ".</think><answer><bbox_id>[2-1]</bbox_id></answer>",
     "used_before_definition"),
    (GOOD.replace("[2-1]", "[3-1]"), "image_out_of_range"),
    (GOOD.replace("[2-1]", "[0-1]"), "image_out_of_range"),
    (GOOD.replace("[2-1]", "[2-0]"), "object_index_invalid"),
    (GOOD.replace("</think>", " Again " + DEF_21.replace("(900,600)", "(950,600)") + ".</think>"),
     "inconsistent_id"),
    (GOOD.replace("</think>", " Again " + DEF_21.replace("red star", "blue star") + ".</think>"),
     "inconsistent_id"),
    (GOOD.replace("</think>", " Also " + DEF_21.replace("[2-1]", "[2-2]") + ".</think>"), "inconsistent_id"),
    (GOOD.replace("(900,600)", "(1200,600)"), "box_out_of_range"),
    (GOOD.replace("(500,200),(900,600)", "(900,200),(500,600)"), "box_unordered"),
    (GOOD.replace("<answer>", "").replace("</answer>", ""), "missing_think_answer"),
    (GOOD.replace("<think>", "<think>").replace("</think>", ""), "missing_think_answer"),
    ("Sure! " + GOOD, "missing_think_answer"),
    (GOOD.replace("<bbox_id>[1-1]</bbox_id>.", "<bbox_id>[1]</bbox_id>."), "malformed_id"),
    (GOOD.replace("<answer><bbox_id>[2-1]</bbox_id></answer>", "<answer>the red star</answer>"),
     "answer_without_box"),
])
def test_validator_names_what_is_broken(text, reason):
    assert trajectory_errors(GOOD, n_images=2) == []
    assert reason in trajectory_errors(text, n_images=2)


def test_validator_reads_qwen25_pixel_boxes_in_their_own_image():
    text = ('<think><bbox_id>[2-1]</bbox_id><|object_ref_start|>cat<|object_ref_end|>{"bbox_2d": [10, 20, 50, 200]}'
            '</think><answer><bbox_id>[2-1]</bbox_id></answer>')
    assert trajectory_errors(text, 2, image_sizes=[(112, 112), (224, 56)]) == []  # image 2: 56 wide, 224 high
    assert trajectory_errors(text, 2, image_sizes=[(224, 56), (112, 112)]) == ["box_out_of_range"]


class _WrongImageTeacher(OracleTrajectoryTeacher):
    """An imperfect mapper: puts every object of the first two samples in image 1 and cannot place
    any object of the third."""

    def map_objects(self, samples, drafts, seed):
        refs = super().map_objects(samples, drafts, seed)
        refs[0] = [dataclasses.replace(r, image=1) for r in refs[0]]
        refs[1] = [dataclasses.replace(r, image=9) for r in refs[1]]
        refs[2] = [None] * len(refs[2])
        return refs


def test_rejections_are_counted_by_reason_not_dropped_silently(ten_tasks):
    samples = [s for s in ten_tasks if s.answer_image == 1][:4]
    kept, stats = build_trajectories(samples, _WrongImageTeacher(), "grounded", seed=0)
    assert stats["samples"] == 4 and stats["kept"] == len(kept) == 1 and stats["rejected_samples"] == 3
    assert stats["rejected"] == {"unmapped_object": 1, "image_out_of_range": 1, "wrong_answer": 1}
    assert sum(c.get("rejected", 0) for c in stats["by_task"].values()) == 3
    assert kept[0][0] is samples[3]


# ------------------------------------------------------------------ scorer and rewards
def test_scorer_resolves_a_bare_bbox_id_answer_to_its_definition():
    parsed = parse_response(GOOD)
    assert parsed.box == pytest.approx((0.5, 0.2, 0.9, 0.6)) and parsed.image == 1 and parsed.well_formed
    own_box = GOOD.replace("<answer><bbox_id>[2-1]</bbox_id>",
                           "<answer><bbox_id>[2-1]</bbox_id><|box_start|>(0,0),(100,100)<|box_end|>")
    assert parse_response(own_box).box == pytest.approx((0.0, 0.0, 0.1, 0.1))  # a written box wins
    assert parse_response(GOOD.replace("<answer><bbox_id>[2-1]", "<answer><bbox_id>[2-2]")).box is None
    # Qwen2.5-VL: the definition's pixels are mapped through image N's own size
    q25 = ('<think><bbox_id>[2-1]</bbox_id><|object_ref_start|>cat<|object_ref_end|>{"bbox_2d": [14, 28, 56, 84]}'
           '</think><answer><bbox_id>[2-1]</bbox_id></answer>')
    p = parse_response(q25, "qwen2_5_vl", image_sizes=[(224, 448), (112, 56)], default_image=0)
    assert p.box == pytest.approx((14 / 56, 28 / 112, 1.0, 84 / 112)) and p.image == 1 and p.well_formed


def test_image_aware_rewards_on_trajectories(ten_tasks):
    samples = [s for s in ten_tasks if s.task in ("group_grounding", "object_tracking", "diff")]
    kept, _ = build_trajectories(samples, OracleTrajectoryTeacher(), "grounded", seed=0)
    texts = [t for _, t in kept]
    cols = _columns([s for s, _ in kept])
    assert REWARDS["image"](texts, **cols) == [1.0] * len(texts)
    assert REWARDS["mirg_format"](texts, **cols) == [1.0] * len(texts)
    total, parts = score_rewards(texts, MIRG_WEIGHTS, **cols)
    assert total.min().item() > 2.9  # r_fmt + r_img + r_obj, the object IoU ~1 (boxes on the 0-1000 grid)

    # the same trajectory answering with an object of another image loses r_img and r_obj, keeps r_fmt
    s, text = kept[0]
    wrong = 2 if s.answer_image == 0 else 1
    decoy = (f"<bbox_id>[{wrong}-9]</bbox_id><|object_ref_start|>decoy<|object_ref_end|>"
             f"<|box_start|>(0,0),(50,50)<|box_end|>")
    moved = text.replace("</think>", f" Or {decoy}.</think>").replace(
        f"<answer>{answer_text(text)}</answer>", f"<answer><bbox_id>[{wrong}-9]</bbox_id></answer>")
    one = {k: v[:1] for k, v in _columns([s]).items()}
    assert REWARDS["image"]([moved], **one) == [0.0]
    assert REWARDS["mirg_format"]([moved], **one) == [1.0]
    assert REWARDS["object"]([moved], **one)[0] < 0.5
    # broken structure: no format reward, but the image and object are still read from the answer
    assert REWARDS["mirg_format"]([text.replace("</think>", "")], **one) == [0.0]
    assert REWARDS["image"]([text.replace("</think>", "")], **one) == [1.0]
    # a plain cold-start JSON answer has the structure and a box: valid MIRG format too
    assert REWARDS["mirg_format"](['<think>x</think><answer>{"bbox_2d": [1, 2, 3, 4]}</answer>'], **one) == [1.0]


def test_qwen25_targets_carry_pixels_of_each_box_own_image(ten_tasks):
    s = next(x for x in ten_tasks if x.task == "group_grounding" and x.answer_image > 0)
    kept, _ = build_trajectories([s], OracleTrajectoryTeacher(), "grounded", seed=0)
    hws = [(112, 112)] * len(s.images)
    hws[s.answer_image] = (224, 56)  # the target's image is tall and narrow
    target = target_text(dataclasses.replace(s, response=kept[0][1]), "qwen2_5_vl", hws)
    assert "<|box_start|>" not in target and '"bbox_2d"' in target
    parsed = parse_response(target, "qwen2_5_vl", image_sizes=hws, default_image=0)
    assert parsed.image == s.answer_image and iou(parsed.box, s.answer) > 0.9
    assert trajectory_errors(target, len(s.images), image_sizes=hws) == []
    cols = _columns([s], sizes=[hws], convention="qwen2_5_vl")
    assert score_rewards([target], MIRG_WEIGHTS, **cols)[0].item() > 2.8


# ----------------------------------------------------------------------- model teacher hook
def test_model_teacher_runs_stages_one_and_two_through_a_local_vlm(ten_tasks, tmp_path):
    cfg = compose_cfg([])
    model, processor = build_tiny(cfg.model, seed=0)
    save_model(model, processor, tmp_path / "teacher")
    tcfg = compose_cfg(["cot.teacher.kind=model", f"cot.teacher.model_path={tmp_path / 'teacher'}",
                        "cot.teacher.max_new_tokens=8"]).cot.teacher
    teacher = make_trajectory_teacher(tcfg, cfg.model)
    assert isinstance(teacher, ModelTrajectoryTeacher)
    samples = ten_tasks[:2]
    # stage 2 alone, on the oracle's stage-1 drafts: one answer (a box or None) per mention
    drafts = OracleTrajectoryTeacher().draft(samples, seed=0)
    refs = teacher.map_objects(samples, drafts, seed=0)
    assert [len(r) for r in refs] == [len(mentions(d.text)) for d in drafts]
    assert all(r is None or 1 <= r.image <= len(s.images) for s, rs in zip(samples, refs) for r in rs)
    # both stages: an untrained VLM writes no marked mentions, and that is counted, not hidden
    kept, stats = build_trajectories(samples, teacher, "grounded", seed=0)
    assert stats["teacher"] == "model" and stats["samples"] == 2
    assert stats["kept"] + stats["rejected_samples"] == 2
    assert sum(stats["rejected"].values()) >= stats["rejected_samples"]


def test_draft_mentions_parse_from_teacher_text():
    d = CotDraft(f"<think>{ref('red cube', 3)} is left of {ref('blue ball', 1)}.</think>"
                 f"<answer>{ref('red cube', 3)}</answer>")
    assert [(m.name, m.image) for m in mentions(d.text)] == [("red cube", 3), ("blue ball", 1), ("red cube", 3)]
