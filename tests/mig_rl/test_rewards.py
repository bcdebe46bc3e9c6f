"""Reward functions: all built on mig_lab.boxes (the evaluation scorer)."""

from __future__ import annotations

import math

import pytest

from mig_lab.boxes import iou, parse_response
from mig_rl.rewards import REWARDS, score_rewards

GT = [0.1, 0.2, 0.5, 0.6]
COLS = dict(answer=[GT] * 4, answer_image=[1] * 4, image_sizes=[[(112, 112), (224, 112)]] * 4,
            convention=["qwen2_vl"] * 4)
COMPLETIONS = [
    '<think>The blue star is in Image-2.</think><answer>{"bbox_2d": [100, 200, 500, 600]}</answer>',
    "<think>no box</think><answer>none</answer>",
    "Image-2: <|box_start|>(100,200),(300,400)<|box_end|>",
    '<answer>{"bbox_2d": [100, 200, 500, 600]}</answer>',
]


def test_iou_reward_uses_the_evaluation_scorer():
    vals = REWARDS["iou"](COMPLETIONS, **COLS)
    assert vals[0] == pytest.approx(1.0)
    assert vals[1] == 0.0
    assert vals[2] == pytest.approx(iou(GT, (0.1, 0.2, 0.3, 0.4)))
    assert vals[3] == pytest.approx(1.0)


def test_format_reward_needs_think_answer_and_json_box():
    assert REWARDS["format"](COMPLETIONS, **COLS) == [1.0, 0.0, 0.0, 0.0]
    assert REWARDS["format"](['<think>x</think>\n<answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>'])[0] == 1.0
    assert REWARDS["format"](['<think>x</think><answer>{"bbox_2d": [1, 2, 3]}</answer>'])[0] == 0.0
    assert REWARDS["format"](['junk <think>x</think><answer>{"bbox_2d": [1, 2, 3, 4]}</answer>'])[0] == 0.0


def test_acc50_reward():
    assert REWARDS["acc50"](COMPLETIONS, **COLS) == [1.0, 0.0, 0.0, 1.0]


def test_image_reward_reads_bbox_id_or_image_mention():
    comps = ["<answer><bbox_id>[2-1]</bbox_id></answer>", "<answer>Image-1: (1,2),(3,4)</answer>",
             "<think>Image-2 has it</think><answer>(1,2),(3,4)</answer>", "Image-2: (1,2),(3,4)"]
    assert REWARDS["image"](comps, **COLS) == [1.0, 0.0, 0.0, 1.0]
    one = {k: v[:1] for k, v in COLS.items()}
    assert REWARDS["image"](comps[:1], **{**one, "answer_image": [None]}) == [None]


def test_image_reward_and_scorer_name_the_same_image():
    """One rule for r_img and the scored box (issue 15 item 6): the image named last before the box."""
    comps = ["<answer>Not in Image-1: Image-2 has it at <|box_start|>(100,200),(500,600)<|box_end|></answer>",
             "<answer>Image-2 <|box_start|>(100,200),(500,600)<|box_end|> (Image-1 has a decoy)</answer>",
             "<think><bbox_id>[2-1]</bbox_id><|box_start|>(100,200),(500,600)<|box_end|></think>"
             "<answer><bbox_id>[2-1]</bbox_id></answer>",
             "<answer>Image-1 and Image-2, no box</answer>"]
    rewards = REWARDS["image"](comps, **COLS)
    assert rewards == [1.0, 1.0, 1.0, 0.0]  # the first names Image-1 first, but its box is Image-2's
    scored = [parse_response(c, "qwen2_vl").image for c in comps]
    assert [float(i == 1) for i in scored] == rewards


def test_qwen25_iou_reward_maps_pixels_through_the_answer_image():
    cols = dict(COLS, convention=["qwen2_5_vl"] * 4)
    # image 2 (index 1) is 224 high x 112 wide: GT in pixels is x 11.2..56, y 44.8..134.4
    comp = ['<think>t</think><answer>{"bbox_2d": [11, 45, 56, 134]}</answer>']
    assert REWARDS["iou"](comp, **{k: v[:1] for k, v in cols.items()})[0] > 0.95


def test_weighted_total_skips_not_applicable():
    total, parts = score_rewards(COMPLETIONS[:2], {"iou": 1.0, "format": 0.5, "image": 1.0},
                                 answer=[GT, GT], answer_image=[1, None], image_sizes=COLS["image_sizes"][:2],
                                 convention=["qwen2_vl"] * 2)
    # completion 0 names no image in its answer block: image reward 0; completion 1: image not applicable
    assert total.tolist() == pytest.approx([1.0 + 0.5 + 0.0, 0.0])
    assert parts["image"][0].item() == 0.0
    assert math.isnan(parts["image"][1].item())


def test_unknown_reward_name_fails_clearly():
    with pytest.raises(ValueError, match="unknown reward"):
        score_rewards(["x"], {"iuo": 1.0}, **{k: v[:1] for k, v in COLS.items()})


def test_no_answer_block_rule_whole_text_or_zero():
    """rl.no_answer_block: `whole_text` reads a completion without <answer>...</answer> as the scorer does;
    `zero` (R1-style) gives it no box and no image. Completions with the block read the same either way."""
    n = len(COMPLETIONS)
    zero = dict(COLS, no_answer_block=["zero"] * n)
    assert REWARDS["iou"](COMPLETIONS, **zero) == [pytest.approx(1.0), 0.0, 0.0, pytest.approx(1.0)]
    assert REWARDS["iou"](COMPLETIONS, **COLS)[2] > 0  # the default: the whole text ("Image-2: <box>")
    assert REWARDS["image"](COMPLETIONS, **COLS)[2] == 1.0 and REWARDS["image"](COMPLETIONS, **zero)[2] == 0.0
    assert REWARDS["acc50"](COMPLETIONS, **zero) == REWARDS["acc50"](COMPLETIONS, **COLS)  # 3rd is < 0.5 anyway


def test_unnamed_image_rule_picks_the_image_whose_size_maps_a_qwen25_box():
    """rl.unnamed_image: a Qwen2.5-VL pixel box that names no image lies in the ground truth's image
    (`answer`, MIG-Bench's rule) or in image 1 (`first`); r_img is 0 for it either way (it names none)."""
    sizes = [(100, 200), (400, 300)]  # (h, w): image 1 is 200 x 100 px, image 2 is 300 x 400 px
    text = ['<answer>{"bbox_2d": [30, 80, 150, 240]}</answer>']  # = GT in image 2's pixels
    cols = dict(answer=[GT], answer_image=[1], image_sizes=[sizes], convention=["qwen2_5_vl"])
    assert REWARDS["iou"](text, **cols)[0] == pytest.approx(1.0)
    first = REWARDS["iou"](text, **cols, unnamed_image=["first"])[0]  # read in image 1: (0.15, 0.8, 0.75, 2.4)
    assert first == pytest.approx(iou(GT, (0.15, 0.8, 0.75, 2.4)))
    assert REWARDS["image"](text, **cols)[0] == REWARDS["image"](text, **cols, unnamed_image=["first"])[0] == 0.0


@pytest.mark.parametrize("key", ["rl.no_answer_block", "rl.unnamed_image"])
def test_an_unknown_reading_rule_is_named_when_the_experiment_is_planned(key, tmp_path):
    from mig_lab.config import ConfigError
    from mig_lab.graph import plan
    from tests.conftest import compose_cfg

    with pytest.raises(ConfigError, match=rf"'{key}' is 'nope'; expected one of"):
        plan(compose_cfg(["experiment=smoke", f"{key}=nope"], tmp_path))
