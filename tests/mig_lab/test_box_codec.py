"""Box codecs for both model families, with per-image resize mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mig_lab.boxes import Qwen2VLBoxCodec, Qwen25VLBoxCodec, resized_hw

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def boxes(draw):
    x1, x2 = sorted((draw(unit), draw(unit)))
    y1, y2 = sorted((draw(unit), draw(unit)))
    return (x1, y1, x2, y2)


@given(boxes())
def test_qwen2_round_trip_within_half_a_permille(box):
    codec = Qwen2VLBoxCodec()
    text = codec.encode(box)
    assert text.startswith("<|box_start|>(") and text.endswith(")<|box_end|>")
    back = codec.decode(f"The target is at {text}.")
    assert back is not None
    assert all(abs(a - b) <= 0.0005 + 1e-9 for a, b in zip(box, back))


@given(boxes(), st.integers(56, 2000), st.integers(56, 2000))
def test_qwen25_round_trip_in_resized_pixels(box, w, h):
    codec = Qwen25VLBoxCodec()
    hw = resized_hw(w, h, min_pixels=56 * 56, max_pixels=1024 * 28 * 28)
    text = codec.encode(box, hw)
    assert '"bbox_2d"' in text
    back = codec.decode(text, hw)
    assert all(abs(a - b) <= 0.5 / min(hw) + 1e-9 for a, b in zip(box, back))


def test_resized_hw_is_a_multiple_of_28_within_pixel_bounds():
    h, w = resized_hw(640, 480, min_pixels=3136, max_pixels=200_000)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 200_000
    assert abs(w / h - 640 / 480) < 0.1


def test_qwen25_transcode_maps_each_box_with_its_own_image():
    codec = Qwen25VLBoxCodec()
    hws = [(112, 224), (448, 336)]  # two images, different resizes
    text = ("Image-1 has <|box_start|>(0,0),(500,500)<|box_end|> and "
            "Image-2 has <|box_start|>(500,500),(1000,1000)<|box_end|>")
    out = codec.transcode(text, hws)
    assert '{"bbox_2d": [0, 0, 112, 56]}' in out  # image 1: w=224, h=112
    assert '{"bbox_2d": [168, 224, 336, 448]}' in out  # image 2: w=336, h=448
    # never via image 0: the second box decodes back with image 2's size
    second = out.split("Image-2 has ")[1]
    assert codec.decode(second, hws[1]) == pytest.approx((0.5, 0.5, 1.0, 1.0))


def test_qwen25_transcode_uses_bbox_id_and_default_image():
    codec = Qwen25VLBoxCodec()
    hws = [(100, 100), (200, 400)]
    text = "<bbox_id>[2-1]</bbox_id><|box_start|>(0,0),(1000,1000)<|box_end|>"
    assert '[0, 0, 400, 200]' in codec.transcode(text, hws)
    assert '[0, 0, 400, 200]' in codec.transcode("<|box_start|>(0,0),(1000,1000)<|box_end|>", hws, default_image=1)


def test_qwen25_needs_the_image_size():
    with pytest.raises(ValueError, match="resized"):
        Qwen25VLBoxCodec().encode((0, 0, 1, 1))
