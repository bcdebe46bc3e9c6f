"""No model output can break a run: every parser, reward and the scorer, on generated hostile responses
(digit runs of up to 10^4 digits, NaN/inf literals, unicode digits, nested and unbalanced brackets, partial
box and id tokens, JSON fragments), never raises, gives finite boxes, and rewards in [0, 1] (or None).

The fast test draws a few thousand responses; `make test-reliability` runs 100,000 (marker `reliability`)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mig_data.cot.trajectory import trajectory_errors
from mig_data.schema import Sample
from mig_eval.answer_forms import assign_boxes
from mig_eval.cot_baselines import step2_image
from mig_eval.evaluate import score_response
from mig_lab.boxes import find_boxes_at, image_index, parse_response
from mig_rl.rewards import REWARDS, score_rewards

FRAGMENTS = [
    "(", ")", "[", "]", "{", "}", ",", ".", "-", " ", "\n", ":", '"', "0", "1", "5", "999", "0.5", "1000", "-3",
    "NaN", "nan", "inf", "-inf", "Infinity", "1e309", "1e-400", "٣", "０", "𝟗", "߁",
    "<|box_start|>", "<|box_end|>", "<|box_start", "box_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<bbox_id>", "</bbox_id>", "[1-2]", "[2-1]", "<answer>", "</answer>", "<think>", "</think>",
    "Image-", "image ", "Picture", " in Image-", "the 2nd image", '{"bbox_2d": [', "]}", '"bbox_2d"', "```json",
    "(100,200),(300,400)", "[0.1, 0.2, 0.3, 0.4]", '{"bbox_2d": [10, 20, 30, 40]}',
]
DIGIT_RUNS = st.integers(1, 10_000).map(lambda n: "9" * n) | st.integers(300, 500).map(lambda n: "1" + "0" * n)
PIECES = st.sampled_from(FRAGMENTS) | DIGIT_RUNS | st.text(max_size=12)
RESPONSES = st.lists(PIECES, max_size=24).map("".join)
SIZES = st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2000)), min_size=0, max_size=6)

SAMPLE = Sample(id="fuzz", task="group_grounding", images=["a.png", "b.png", "c.png"],
                question="Find the red circle in the 2nd image.", answer=[0.1, 0.2, 0.4, 0.5], answer_image=1)
MEMBERS = [Sample(id=f"m{i}", task="common_object", images=["a.png", "b.png", "c.png"], question="q",
                  answer=[0.1, 0.1, 0.3, 0.3], answer_image=i) for i in range(3)]


def _finite_box(box) -> bool:
    return box is None or (len(box) == 4 and all(math.isfinite(v) for v in box))


def check_response(text: str, sizes: list[tuple[int, int]]) -> None:
    """Everything that reads model output, on one response."""
    for convention in ("qwen2_vl", "qwen2_5_vl"):
        for default in (0, 2, 7):
            parsed = parse_response(text, convention, image_sizes=sizes, default_image=default)
            assert _finite_box(parsed.box), parsed
        for _, values in find_boxes_at(text, convention):
            assert all(math.isfinite(v) for v in values)
        rec = score_response(SAMPLE, text, sizes or [(112, 112)] * 3, convention)
        assert 0.0 <= rec["iou"] <= 1.0 and _finite_box(rec["box"])
        for box, _, _ in assign_boxes(text, MEMBERS, convention, sizes or [(112, 112)] * 3):
            assert _finite_box(box)
    image_index(text)
    trajectory_errors(text, 3, sizes)
    assert 0 <= step2_image(SAMPLE, text) < len(SAMPLE.images)
    n = 2
    columns = {"answer": [SAMPLE.answer, None], "answer_image": [1, None], "image_sizes": [sizes, sizes],
               "convention": ["qwen2_vl", "qwen2_5_vl"], "task": ["group_grounding"] * n,
               "no_answer_block": ["whole_text", "zero"], "unnamed_image": ["answer", "first"]}
    total, parts = score_rewards([text, text], {name: 1.0 for name in REWARDS}, **columns)
    assert all(math.isfinite(v) for v in total.tolist())
    for name, values in parts.items():
        assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in values.tolist()), (name, values)


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(RESPONSES, SIZES)
def test_no_response_breaks_a_parser_a_reward_or_the_scorer(text, sizes):
    check_response(text, sizes)


@pytest.mark.slow
@pytest.mark.reliability
@settings(max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(RESPONSES, SIZES)
def test_no_response_breaks_anything_100k(text, sizes):
    check_response(text, sizes)


@pytest.mark.parametrize("text", [
    "<|box_start|>(" + "9" * 5000 + ",1),(2,3)<|box_end|>",  # int() refuses 4,300+ digits
    '<answer>{"bbox_2d": [' + "1" * 5000 + ", 2, 3, 4]}</answer>",  # json.loads too
    "Image-" + "9" * 5000 + " (1,2),(3,4)",
    "<bbox_id>[" + "9" * 5000 + "-1]</bbox_id>(1,2),(3,4)",
    "[1" + "0" * 400 + ".5, 0.2, 0.3, 0.4]",  # a float of 400 digits is inf
    '{"bbox_2d": [1, 2, 3, 4]}',  # pixels of an image of size 0
])
def test_the_cases_that_used_to_raise(text):
    check_response(text, [(0, 0), (112, 0), (0, 112)])


def test_the_scorer_command_reports_a_hostile_response_as_no_box(tmp_path, capsys):
    from scripts.score_predictions import main

    bench = [{"task": "group_grounding", "images": ["a.png", "b.png"], "question": "Find it.",
              "answer": [0.1, 0.1, 0.5, 0.5], "additional_info": "", "need_format": True}]
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    (tmp_path / "preds.jsonl").write_text(json.dumps({"index": 0, "response": "(" + "9" * 6000 + ",1),(2,3)"}) + "\n")
    rc = main(["--bench", str(tmp_path / "bench.json"), "--pred", str(tmp_path / "preds.jsonl"),
               "--out", str(tmp_path / "metrics.json")])
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["overall"]["acc@0.5"] == 0.0
