"""The one scorer (`mig_lab.boxes`): Migician's parsing cascade and IoU on tricky responses, the
Qwen2.5-VL per-image pixel mapping, answer blocks and MIRG bbox ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mig_eval.evaluate import migician_y_rescale
from mig_lab.boxes import find_raw_boxes, iou, parse_response

GT = [0.1, 0.2, 0.5, 0.6]


def box_of(text, **kw):
    return parse_response(text, **kw).box


def test_canonical_box_with_and_without_special_tokens():
    with_tokens = "Image-2: <|box_start|>(100,200),(500,600)<|box_end|>"
    bare = "The object is at (100,200),(500,600)."
    assert box_of(with_tokens) == pytest.approx((0.1, 0.2, 0.5, 0.6))
    assert box_of(bare) == box_of(with_tokens)
    assert parse_response(with_tokens).well_formed and not parse_response(bare).well_formed
    assert iou(GT, box_of(bare)) == pytest.approx(1.0)


def test_text_around_the_box_and_spaces_inside_it():
    text = "Sure! After comparing both pictures, it is located at (100, 200), (500, 600) in the second image."
    assert box_of(text) == pytest.approx((0.1, 0.2, 0.5, 0.6))


def test_several_boxes_first_counts_and_multi_match_scaling_quirk():
    # one match: values >= 1 are divided by 1000 (1 -> 0.001)
    assert box_of("(1,2),(300,400)") == pytest.approx((0.001, 0.002, 0.3, 0.4))
    # several matches: the published code divides only values > 1, so a 1 stays 1.0
    two = "(1,2),(300,400) and (500,500),(600,600)"
    assert box_of(two) == pytest.approx((1.0, 0.002, 0.3, 0.4))
    assert box_of("(100,200),(500,600) then (0,0),(10,10)") == pytest.approx((0.1, 0.2, 0.5, 0.6))


def test_floats_in_unit_range_vs_0_1000_integers():
    assert box_of("[0.1, 0.2, 0.5, 0.6]") == pytest.approx((0.1, 0.2, 0.5, 0.6))
    assert box_of("[100, 200, 500, 600]") == pytest.approx((0.1, 0.2, 0.5, 0.6))
    assert box_of("(0.1,0.2),(0.5,0.6)") == pytest.approx((0.1, 0.2, 0.5, 0.6))
    assert box_of("<box>100 200 500 600</box>") == pytest.approx((0.1, 0.2, 0.5, 0.6))
    # the cascade order decides: integer pairs beat a float list that comes first in the text
    assert box_of("[0.9, 0.9, 1.0, 1.0] or (100,200),(500,600)") == pytest.approx((0.1, 0.2, 0.5, 0.6))
    # a float of exactly 1.0 in a single match is divided like an integer (published behaviour)
    assert box_of("[0.1, 0.2, 1.0, 0.6]") == pytest.approx((0.1, 0.2, 0.001, 0.6))


@pytest.mark.parametrize("text", ["", "I cannot find it.", "(12,34)", "[1, 2, 3]", "(3,4),(5,", "Image-2",
                                  "<|box_start|><|box_end|>", "-(1,-2),(3,4)x"])
def test_no_box_or_garbage_scores_zero(text):
    parsed = parse_response(text)
    assert parsed.box is None or iou(GT, parsed.box) == 0.0
    assert iou(GT, parsed.box) == 0.0
    assert not parsed.well_formed


def test_swapped_corners_are_not_reordered():
    swapped = box_of("(500,600),(100,200)")
    assert swapped == pytest.approx((0.5, 0.6, 0.1, 0.2))
    assert iou(GT, swapped) == 0.0  # the same box with ordered corners would score 1
    assert not parse_response("<|box_start|>(500,600),(100,200)<|box_end|>").well_formed


def test_values_over_1000_are_kept_not_clamped():
    box = box_of("(0,0),(1200,1000)")
    assert box == pytest.approx((0.0, 0.0, 1.2, 1.0))
    assert iou([0.0, 0.0, 1.0, 1.0], box) == pytest.approx(1 / 1.2)
    assert not parse_response("<|box_start|>(0,0),(1200,1000)<|box_end|>").well_formed


def test_iou_by_hand():
    assert iou([0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]) == pytest.approx(0.0625 / (0.25 + 0.25 - 0.0625))
    assert iou([0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5]) == 0.0  # touching edges
    assert iou([0, 0, 0.5, 0.5], None) == 0.0
    assert iou([0, 0, 0.5, 0.5], [0.2, 0.2, 0.2, 0.2]) == 0.0  # empty prediction, no division error
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # zero union


def test_answer_block_is_what_counts():
    text = "<think>Image-1 shows a cat at (1,2),(3,4).</think><answer>Image-2: (100,200),(500,600)</answer>"
    parsed = parse_response(text)
    assert parsed.box == pytest.approx((0.1, 0.2, 0.5, 0.6)) and parsed.image == 1
    assert parse_response(text, use_answer_block=False).box == pytest.approx((1.0, 0.002, 0.003, 0.004))


def test_mirg_bbox_id_names_the_image():
    text = ("<think><bbox_id>[1-1]</bbox_id> is the query.</think><answer><bbox_id>[3-2]</bbox_id>"
            "<|object_ref_start|>red cube<|object_ref_end|><|box_start|>(100,200),(500,600)<|box_end|></answer>")
    parsed = parse_response(text)
    assert parsed.image == 2 and parsed.box == pytest.approx((0.1, 0.2, 0.5, 0.6)) and parsed.well_formed


def test_qwen25_pixels_map_through_each_images_own_resize():
    hws = [(224, 448), (112, 56)]  # (h, w): image 1 is wide, image 2 is tall and small
    text = 'Image-2: {"bbox_2d": [14, 28, 56, 84]}'
    parsed = parse_response(text, "qwen2_5_vl", image_sizes=hws)
    assert parsed.box == pytest.approx((14 / 56, 28 / 112, 1.0, 84 / 112)) and parsed.image == 1
    assert parsed.well_formed
    # the same pixels read as image 1 give a different box: never map via image 0 by accident
    image1 = parse_response('Image-1: {"bbox_2d": [14, 28, 56, 84]}', "qwen2_5_vl", image_sizes=hws).box
    assert image1 == pytest.approx((14 / 448, 28 / 224, 56 / 448, 84 / 224))
    # unnamed: the caller's default image (the target)
    unnamed = parse_response('{"bbox_2d": [14, 28, 56, 84]}', "qwen2_5_vl", image_sizes=hws, default_image=1)
    assert unnamed.box == parsed.box and unnamed.image is None
    # the image named last before the box wins over an earlier mention
    text = 'The cup of Image-1 is also in Image-2: {"bbox_2d": [14, 28, 56, 84]}'
    assert parse_response(text, "qwen2_5_vl", image_sizes=hws).box == pytest.approx(parsed.box)


def test_qwen25_json_in_answer_block_plain_lists_and_normalised_floats():
    hws = [(100, 200)]
    text = '<think>...</think><answer>```json\n[{"bbox_2d": [20, 10, 100, 50], "label": "dog"}]\n```</answer>'
    assert box_of(text, convention="qwen2_5_vl", image_sizes=hws) == pytest.approx((0.1, 0.1, 0.5, 0.5))
    assert box_of("[20, 10, 100, 50]", convention="qwen2_5_vl", image_sizes=hws) == pytest.approx((0.1, 0.1, 0.5, 0.5))
    floats = parse_response('{"bbox_2d": [0.1, 0.1, 0.5, 0.5]}', "qwen2_5_vl", image_sizes=hws)
    assert floats.box == pytest.approx((0.1, 0.1, 0.5, 0.5)) and not floats.well_formed
    assert parse_response('{"bbox_2d": [20, 10, 300, 50]}', "qwen2_5_vl", image_sizes=hws).well_formed is False
    assert parse_response("nothing", "qwen2_5_vl", image_sizes=hws).box is None
    # a pixel box without any image size cannot be placed: no box
    assert parse_response('{"bbox_2d": [20, 10, 100, 50]}', "qwen2_5_vl").box is None


def test_unknown_convention_fails_loudly():
    with pytest.raises(ValueError, match="convention"):
        parse_response("(1,2),(3,4)", "qwen3")


def test_migician_y_rescale_is_the_published_one():
    assert migician_y_rescale((0.1, 0.2, 0.5, 0.6)) == (0.1, 0.21, 0.5, 0.66)
    assert migician_y_rescale((0.1, 0.98, 0.5, 0.99)) == (0.1, 0.999, 0.5, 0.999)


def test_find_raw_boxes_keeps_values_as_written():
    assert find_raw_boxes("a (1,2),(3,4) b (5,6),(7,8)") == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert find_raw_boxes("nothing") == []


@given(st.lists(st.integers(0, 1000), min_size=4, max_size=4))
def test_any_single_integer_box_is_read_in_thousandths(v):
    box = box_of(f"<|box_start|>({v[0]},{v[1]}),({v[2]},{v[3]})<|box_end|>")
    assert box == pytest.approx(tuple(x / 1000 for x in v))
