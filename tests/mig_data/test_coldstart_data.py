"""Cold-start CoT data for each model family: the SFT targets are in the family's own box convention."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from mig_data.collate import image_hws, load_image, target_text
from mig_data.cot.coldstart import OracleTeacher, with_cot_instruction
from mig_data.loading import load_split
from mig_lab.boxes import BBOX_2D, iou, parse_response
from mig_models.builders import build_tiny
from tests.conftest import compose_cfg


def test_qwen25_cot_sft_targets_are_absolute_pixels_of_their_image(synth_data):
    """coldstart_rl.txt trains Qwen2.5-VL on `{"bbox_2d": [...]}` in absolute pixels of the resized image: the
    oracle's canonical 0-1000 JSON box must reach the SFT target as pixels of the answer's own image, in range,
    and parse back (with the Qwen2.5-VL scorer) onto the ground truth."""
    _, processor = build_tiny(compose_cfg(["model=tiny_qwen2_5_vl"]).model, seed=0)
    samples = [s for s in load_split(synth_data, "train") if s.answer is not None][:8]
    responses = OracleTeacher(noise=0.0).respond(samples, k=1, seed=0)
    for s, (response,) in zip(samples, responses):
        sample = with_cot_instruction(s, response)
        hws = image_hws([load_image(p, s.id) for p in s.images], processor)
        target = target_text(sample, "qwen2_5_vl", hws)
        (m,) = list(BBOX_2D.finditer(target))
        x1, y1, x2, y2 = (float(v) for v in m.groups())
        h, w = hws[s.answer_image or 0]
        assert all(v == int(v) for v in (x1, y1, x2, y2)) and 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h, target
        assert max(x2, y2) > 1.5, "pixels, not [0, 1] fractions"
        parsed = parse_response(target, "qwen2_5_vl", image_sizes=hws, default_image=s.answer_image or 0)
        assert parsed.well_formed and iou(parsed.box, s.answer) == pytest.approx(1.0, abs=0.06), (target, s.answer)
        assert json.loads(re.search(r"<answer>(.*)</answer>", target).group(1))["bbox_2d"] == [x1, y1, x2, y2]
    # Qwen2-VL keeps the canonical 0-1000 grid
    q2 = target_text(with_cot_instruction(samples[0], responses[0][0]), "qwen2_vl", [])
    assert q2 == responses[0][0]


def test_a_model_teacher_asked_for_cot_gets_no_contradicting_format_prompt(synth_data, tmp_path):
    from mig_data.collate import user_text
    from mig_data.cot.coldstart import COT_INSTRUCTION
    from mig_data.cot.teachers import ModelTeacher
    from mig_models.builders import save_model

    cfg = compose_cfg([]).model
    model, processor = build_tiny(cfg, seed=0)
    save_model(model, processor, tmp_path / "teacher")
    s = dataclasses.replace(load_split(synth_data, "train")[0], need_format=True)  # a MIG-Bench-style question
    cot_teacher = ModelTeacher(cfg, str(tmp_path / "teacher"), instruction=COT_INSTRUCTION)
    (asked,) = cot_teacher.asked([s])
    text = user_text(asked, "qwen2_vl", asked.question + COT_INSTRUCTION)
    assert text.endswith(COT_INSTRUCTION) and "Don't generate additional words" not in text
    plain = ModelTeacher(cfg, str(tmp_path / "teacher"))  # no instruction: the native format prompt stays
    assert plain.asked([s])[0].need_format


def test_the_consistency_filter_reads_a_qwen25_teacher_in_pixels_and_stores_canonical_text(synth_data):
    """A Qwen2.5-VL teacher answers in absolute pixels of each image as it saw it: the filter must score those
    (with the sizes) and store the kept answer on the canonical grid, which each student family then
    transcodes (here back to the same pixels, and to Qwen2-VL's 0-1000)."""
    from mig_data.cot.coldstart import consistency_filter
    from mig_lab.boxes import codec_for

    _, processor = build_tiny(compose_cfg(["model=tiny_qwen2_5_vl"]).model, seed=0)
    samples = [s for s in load_split(synth_data, "train") if s.answer is not None][:4]
    sizes = {s.id: image_hws([load_image(p, s.id) for p in s.images], processor) for s in samples}
    q25 = codec_for("qwen2_5_vl")

    def answer(s):
        k = s.answer_image or 0
        return f"<think>It is in Image-{k + 1}.</think><answer>{q25.encode(tuple(s.answer), sizes[s.id][k])}</answer>"

    responses = [[answer(s)] * 4 for s in samples]
    kept, stats = consistency_filter(samples, responses, convention="qwen2_5_vl", image_sizes=sizes)
    assert stats["kept"] == len(samples), stats  # read as pixels: every answer is right
    for s, text in kept:
        k = s.answer_image or 0
        assert iou(parse_response(text, "qwen2_vl").box, s.answer) > 0.9  # canonical 0-1000 grid now
        back = target_text(with_cot_instruction(s, text), "qwen2_5_vl", sizes[s.id])
        assert iou(parse_response(back, "qwen2_5_vl", image_sizes=sizes[s.id], default_image=k).box, s.answer) > 0.9
