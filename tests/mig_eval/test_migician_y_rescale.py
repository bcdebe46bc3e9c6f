"""Migician's y-rescale (`eval.migician_y_rescale`) reaches only responses with exactly one box, as in
the published scorer (thunlp/Migician@7b868a2, eval/MIG_bench_eval.py L238-245 + eval/utils.py
L35-42): with several boxes `extract_bbox` returns a list of boxes, the rescale raises a TypeError
that `except: pass` swallows, and the first box is scored unscaled.

Every expected value below is worked out by hand. The fixed answers share the x extent of their
ground truth (x 0.2-0.6), so IoU is the 1-D IoU of the y intervals: overlap / union."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mig_data.schema import Sample
from mig_eval.evaluate import (
    answer_cot,
    answer_direct,
    migician_rescales,
    migician_y_rescale,
    score_box,
    score_response,
    score_step2,
)
from mig_lab.boxes import iou, parse_response

CO_Q = "These images share one object in common. Recognize and locate this object in the {}th image. "


def record(gt, task="common_object", question="Locate it.", images=("a", "b", "c"), answer_image=0, sid="s"):
    return Sample(id=sid, task=task, images=list(images), question=question, answer=list(gt),
                  answer_image=answer_image)


def test_the_rescale_reaches_one_box_responses_only():
    s = record((0.1, 0.2, 0.5, 0.6))
    one = "<|box_start|>(100,200),(500,600)<|box_end|>"
    two = one + " and <|box_start|>(0,0),(10,10)<|box_end|>"
    # one box: y1 0.2 * 1.05 = 0.21, y2 0.6 * 1.10 = 0.66
    assert score_response(s, one, [], "qwen2_vl", y_rescale=True)["box"] == pytest.approx([0.1, 0.21, 0.5, 0.66])
    # two boxes: the first one, unscaled (Migician's TypeError path), so IoU 1.0 with the ground truth
    rec = score_response(s, two, [], "qwen2_vl", y_rescale=True)
    assert rec["box"] == pytest.approx([0.1, 0.2, 0.5, 0.6]) and rec["iou"] == pytest.approx(1.0)
    # flag off: never rescaled
    assert score_response(s, one, [], "qwen2_vl")["box"] == pytest.approx([0.1, 0.2, 0.5, 0.6])
    # no box: nothing to rescale, IoU 0
    assert score_response(s, "I cannot see it.", [], "qwen2_vl", y_rescale=True)["box"] is None
    # score_box itself rescales when told (callers decide with migician_rescales)
    assert score_box(s, two, (0.1, 0.2, 0.5, 0.6), 0, 0, True, True)["box"] == pytest.approx([0.1, 0.21, 0.5, 0.66])


def test_boxes_are_counted_as_migicians_cascade_counts_them():
    assert migician_rescales("(100,200),(500,600)")
    assert not migician_rescales("(100,200),(500,600) (1,2),(3,4)")
    assert not migician_rescales("[0.1, 0.2, 0.5, 0.6] [0.3, 0.3, 0.4, 0.4] [0.7, 0.7, 0.8, 0.8]")
    assert not migician_rescales("no box here")
    # a float list and an integer pair: the cascade stops at the integer pairs, ONE match -> rescaled
    mixed = "[0.9, 0.9, 0.95, 0.95] or (100,200),(500,600)"
    assert migician_rescales(mixed)
    s = record((0.1, 0.2, 0.5, 0.6))
    assert score_response(s, mixed, [], "qwen2_vl", y_rescale=True)["box"] == pytest.approx([0.1, 0.21, 0.5, 0.66])
    # counted inside the answer block, as the box is read: the think part's boxes do not count
    r1 = "<think>(1,1),(2,2) and (3,3),(4,4)</think><answer>(100,200),(500,600)</answer>"
    assert migician_rescales(r1)
    # a MIRG answer naming a bbox_id is read as that id's one box
    mirg = ("<think>Image-2 <bbox_id>[2-1]</bbox_id><|box_start|>(100,200),(500,600)<|box_end|> and "
            "<bbox_id>[2-2]</bbox_id><|box_start|>(600,600),(700,700)<|box_end|></think>"
            "<answer><bbox_id>[2-1]</bbox_id></answer>")
    assert migician_rescales(mirg)
    # Qwen2.5-VL: JSON bbox_2d boxes are counted
    assert migician_rescales('{"bbox_2d": [10, 20, 50, 60]}', "qwen2_5_vl")
    assert not migician_rescales('{"bbox_2d": [10, 20, 50, 60]} {"bbox_2d": [1, 2, 3, 4]}', "qwen2_5_vl")


# 20 fixed multi-box answers: (ground-truth y1, y2), (first box y1, y2 on the 0-1000 grid), then the
# hand-worked IoUs: unscaled (Migician's path for these) and with the first box rescaled (our path
# before this change). x is 0.2-0.6 in both boxes.
FIXED = [
    # the rescale helps: unscaled IoU < 0.5, rescaled >= 0.5
    ((0.44, 0.56), (400, 500), 0.06 / 0.16, 0.11 / 0.14),     # rescaled y 0.42-0.55
    ((0.63, 0.77), (580, 690), 0.06 / 0.19, 0.129 / 0.161),   # 0.609-0.759
    ((0.22, 0.34), (180, 280), 0.06 / 0.16, 0.088 / 0.151),   # 0.189-0.308
    ((0.51, 0.66), (480, 590), 0.08 / 0.18, 0.139 / 0.156),   # 0.504-0.649
    ((0.33, 0.46), (300, 400), 0.07 / 0.16, 0.11 / 0.145),    # 0.315-0.44
    ((0.70, 0.86), (660, 770), 0.07 / 0.20, 0.147 / 0.167),   # 0.693-0.847
    # the rescale hurts: unscaled >= 0.5, rescaled < 0.5
    ((0.80, 0.90), (800, 900), 1.0, 0.06 / 0.19),             # 0.84-0.99
    ((0.60, 0.70), (600, 700), 1.0, 0.07 / 0.17),             # 0.63-0.77
    ((0.85, 0.95), (860, 940), 0.08 / 0.10, 0.047 / 0.149),   # 0.903-0.999 (y2 capped)
    ((0.50, 0.60), (500, 600), 1.0, 0.075 / 0.16),            # 0.525-0.66
    # right either way
    ((0.10, 0.50), (100, 480), 0.38 / 0.40, 0.395 / 0.428),   # 0.105-0.528
    ((0.20, 0.60), (200, 580), 0.38 / 0.40, 0.39 / 0.438),    # 0.21-0.638
    ((0.05, 0.45), (40, 440), 0.39 / 0.41, 0.40 / 0.442),     # 0.042-0.484
    ((0.30, 0.70), (300, 660), 0.36 / 0.40, 0.385 / 0.426),   # 0.315-0.726
    ((0.10, 0.80), (100, 760), 0.66 / 0.70, 0.695 / 0.736),   # 0.105-0.836
    # wrong either way (no overlap)
    ((0.10, 0.20), (500, 600), 0.0, 0.0),
    ((0.70, 0.80), (100, 200), 0.0, 0.0),
    ((0.40, 0.50), (560, 650), 0.0, 0.0),
    ((0.05, 0.15), (300, 400), 0.0, 0.0),
    ((0.60, 0.70), (200, 300), 0.0, 0.0),
]


def multi_box_text(i: int, y1: int, y2: int) -> str:
    """The first box (x 200-600) plus one or two other boxes, in four of the cascade's syntaxes."""
    if i % 4 == 0:
        return (f"Image-2: <|box_start|>(200,{y1}),(600,{y2})<|box_end|>\n"
                f"Image-3: <|box_start|>(50,50),(150,150)<|box_end|>")
    if i % 4 == 1:
        return f"It is at (200,{y1}),(600,{y2}); a similar one is at (700, 100), (900, 300)."
    if i % 4 == 2:
        return f"[0.2, {y1 / 1000:g}, 0.6, {y2 / 1000:g}] and [0.05, 0.05, 0.15, 0.15]"
    return f"<box>200 {y1} 600 {y2}</box> <box>10 10 20 20</box> <box>30 30 40 40</box>"


def test_effect_on_twenty_fixed_multi_box_answers():
    samples = [record((0.2, g1, 0.6, g2), sid=f"f{i}") for i, ((g1, g2), _, _, _) in enumerate(FIXED)]
    texts = [multi_box_text(i, y1, y2) for i, (_, (y1, y2), _, _) in enumerate(FIXED)]
    ours = [score_response(s, t, [], "qwen2_vl", y_rescale=True) for s, t in zip(samples, texts)]
    for s, t, rec, (_, (y1, y2), unscaled, rescaled) in zip(samples, texts, ours, FIXED):
        assert not migician_rescales(t)
        assert rec["box"] == pytest.approx([0.2, y1 / 1000, 0.6, y2 / 1000])  # first box, not rescaled
        assert rec["iou"] == pytest.approx(unscaled, abs=1e-9)
        # our path before: the first box rescaled whatever the count
        first = parse_response(t).box
        assert iou(s.answer, migician_y_rescale(first)) == pytest.approx(rescaled, abs=1e-9)
        assert score_box(s, t, first, 0, 0, True, True)["iou"] == pytest.approx(rescaled, abs=1e-9)
    migician_acc = sum(r["iou"] >= 0.5 for r in ours) / 20
    every_box_acc = sum(f[3] >= 0.5 for f in FIXED) / 20
    assert (migician_acc, every_box_acc) == (0.45, 0.55)  # 9 vs 11 of 20: 6 gained, 4 lost by rescaling
    assert sum(r["iou"] for r in ours) / 20 == pytest.approx(0.5396, abs=1e-4)
    assert sum(f[3] for f in FIXED) / 20 == pytest.approx(0.5389, abs=1e-4)
    # the same first boxes answered alone ARE rescaled (both paths agree on one-box answers): 55%
    alone = [score_response(s, f"<|box_start|>(200,{y1}),(600,{y2})<|box_end|>", [], "qwen2_vl", y_rescale=True)
             for s, (_, (y1, y2), _, _) in zip(samples, FIXED)]
    assert [r["iou"] for r in alone] == pytest.approx([f[3] for f in FIXED], abs=1e-9)
    assert sum(r["iou"] >= 0.5 for r in alone) == 11


def fixed_gen(*responses):
    """The model's answers, in call order: one list of texts per generation pass."""
    calls = list(responses)

    def gen(prompts, record=False):
        texts = calls.pop(0)
        assert len(texts) == len(prompts)
        return texts, [[] for _ in prompts], [None] * len(prompts)
    return gen


GROUP_GT = [(0.1, 0.1, 0.3, 0.3), (0.2, 0.2, 0.4, 0.4), (0.5, 0.5, 0.7, 0.7)]
GROUP_ANSWER = ("Image-1: <|box_start|>(100,100),(300,300)<|box_end|>\n"
                "Image-2: <|box_start|>(200,200),(400,400)<|box_end|>\n"
                "Image-3: <|box_start|>(500,500),(700,700)<|box_end|>")


def group():
    return [record(gt, question=CO_Q.format(k + 1), answer_image=k, sid=f"co{k}") for k, gt in enumerate(GROUP_GT)]


@pytest.mark.parametrize("flag", [True, False])
def test_all_at_once_answers_with_several_boxes_are_not_rescaled(flag):
    members = group()
    # a two-image multi-view group has one target: its all-at-once answer holds one box -> rescaled
    mv = record((0.2, 0.4, 0.6, 0.8), task="multi_view", question="Locate the marked object in the 2th image. ",
                images=("x", "y"), answer_image=1, sid="mv")
    ecfg = OmegaConf.create({"answer_form": "all", "cot": "none", "migician_y_rescale": flag})
    gen = fixed_gen([GROUP_ANSWER, "Image-2: <|box_start|>(200,400),(600,800)<|box_end|>"])
    recs = answer_direct([[0, 1, 2], [3]], [*members, mv], gen, "qwen2_vl", ecfg)
    for rec, gt in zip(recs[:3], GROUP_GT):
        assert rec["box"] == pytest.approx(list(gt)) and rec["iou"] == pytest.approx(1.0)
    # 0.4 * 1.05 = 0.42, 0.8 * 1.10 = 0.88: IoU = 0.38 / 0.48 (x extents equal)
    assert recs[3]["box"] == pytest.approx([0.2, 0.42, 0.6, 0.88] if flag else [0.2, 0.4, 0.6, 0.8])
    assert recs[3]["iou"] == pytest.approx(0.38 / 0.48 if flag else 1.0)


def test_all_plus_mcot_step2_with_several_boxes_is_not_rescaled():
    ecfg = OmegaConf.create({"answer_form": "all", "cot": "multi", "migician_y_rescale": True})
    gen = fixed_gen(["a red mug"], [GROUP_ANSWER])
    recs = answer_cot([[0, 1, 2]], group(), gen, "qwen2_vl", ecfg)
    assert [r["box"] for r in recs] == [pytest.approx(list(gt)) for gt in GROUP_GT]


@pytest.mark.parametrize("mode, hws", [("single", [[]]), ("multi", [[], []])])
def test_cot_step2_follows_the_same_rule(mode, hws):
    s = record((0.1, 0.2, 0.5, 0.6), task="diff", images=("a", "b"), answer_image=1)
    one = "<|box_start|>(100,200),(500,600)<|box_end|>"
    two = one + " <|box_start|>(700,700),(800,800)<|box_end|>"
    assert score_step2(s, one, hws, 1, mode, "qwen2_vl", True)["box"] == pytest.approx([0.1, 0.21, 0.5, 0.66])
    assert score_step2(s, two, hws, 1, mode, "qwen2_vl", True)["box"] == pytest.approx([0.1, 0.2, 0.5, 0.6])
