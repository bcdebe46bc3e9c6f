"""Bad input fails with a DataError naming the file, the record and the problem; with
data.on_error=skip such records are skipped, counted by reason and reported, never dropped silently."""

from __future__ import annotations

import json
import logging

import pytest
from PIL import Image

from mig_data.collate import SFTCollator
from mig_data.formats.coco import read_coco_instances, read_refcoco
from mig_data.formats.mig_bench import read_mig_bench
from mig_data.formats.sharegpt import read_sharegpt
from mig_data.schema import DataError
from mig_lab.config import ConfigError
from mig_lab.graph import run_stages
from mig_models.builders import build_processor
from mig_models.tokenizer import build_tokenizer
from tests.conftest import compose_cfg
from tests.mig_data.data_files import (
    MULTI_TURN,
    coco_instances,
    write_coco_dataset,
    write_corrupt_image,
    write_image,
)

pytestmark = pytest.mark.reliability  # the bad-input corpus of every reader: also in make test-reliability


def good_record(i: int = 0) -> dict:
    return {"id": f"r{i}", "task": "group_grounding", "images": ["a.png", "b.png"],
            "question": "Find the red circle.", "answer": [0.1, 0.2, 0.3, 0.4],
            "additional_info": "It is in the second image.", "need_format": True}


def write_bench(tmp_path, records, name="bench.json"):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    path = tmp_path / name
    path.write_text(json.dumps(records, indent=1))
    return path


def bad(tmp_path, **changes) -> tuple:
    """A MIG-Bench file whose record 1 (id 'r1') is good_record with `changes` (None deletes a key)."""
    rec = good_record(1)
    for k, v in changes.items():
        if v is None:
            del rec[k]
        else:
            rec[k] = v
    return write_bench(tmp_path, [good_record(0), rec]), rec


def assert_names(err: pytest.ExceptionInfo, path, *parts: str) -> None:
    msg = str(err.value)
    assert str(path) in msg, msg
    for p in parts:
        assert p in msg, msg


# --------------------------------------------------------------------------------------- images
def test_missing_image_names_the_file_record_and_path(tmp_path):
    path, _ = bad(tmp_path, images=["a.png", "nowhere.png"])
    with pytest.raises(DataError) as err:
        read_mig_bench(path)
    assert_names(err, path, "record 1 (id 'r1')", "image not found", str(tmp_path / "nowhere.png"))
    assert err.value.reason == "missing_image"


def test_missing_image_in_a_sharegpt_record(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.png")
    path = tmp_path / "mg.json"
    path.write_text(json.dumps([MULTI_TURN]))  # names img/c.png, which is not there
    with pytest.raises(DataError) as err:
        read_sharegpt(path)
    assert_names(err, path, "record 0 (id 'mt-1')", "image not found", "img/c.png")


@pytest.mark.parametrize("mode", ["header", "full"])
def test_corrupt_image_fails_at_load_when_verify_images_is_on(tmp_path, mode):
    path = write_bench(tmp_path, [good_record(0), good_record(1)])
    write_corrupt_image(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as im:
        assert im.size == (64, 48)  # it opens: only verifying or decoding shows the damage
    assert len(read_mig_bench(path, verify_images="none").samples) == 2  # existence checks alone pass it
    with pytest.raises(DataError) as err:
        read_mig_bench(path, verify_images=mode)
    assert_names(err, path, "record 0 (id 'r0')", "unreadable or corrupt", str(tmp_path / "b.png"))
    assert err.value.reason == "corrupt_image"


def test_make_data_verifies_image_headers_by_default(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    path = write_bench(src, [good_record(0)])
    (src / "b.png").write_bytes(b"not an image at all")
    cfg = compose_cfg(["logger=csv", "+stages={data: {kind: make_data}}", "data=mig_bench", f"data.root={src}",
                       f"data.eval_file={path}"], tmp_path)
    assert cfg.data.verify_images == "header"
    with pytest.raises(DataError, match=r"record 0 \(id 'r0'\).*unreadable or corrupt.*b\.png"):
        run_stages(cfg, tmp_path / "run")


def test_corrupt_image_always_fails_at_collate_naming_the_sample(tmp_path):
    path = write_bench(tmp_path, [good_record(0)])
    samples = read_mig_bench(path).samples
    write_corrupt_image(tmp_path / "b.png")
    collate = SFTCollator(build_processor("qwen2_vl", build_tokenizer("bpe"), 112 * 112, 112 * 112), "qwen2_vl", 2048)
    with pytest.raises(DataError) as err:
        collate(samples)
    assert_names(err, tmp_path / "b.png", "sample r0", "unreadable or corrupt")
    (tmp_path / "b.png").unlink()
    with pytest.raises(DataError, match=r"sample r0: image not found: .*b\.png"):
        collate(samples)


# ------------------------------------------------------------------------------ malformed records
def test_missing_key_is_named(tmp_path):
    path, _ = bad(tmp_path, question=None)
    with pytest.raises(DataError) as err:
        read_mig_bench(path)
    assert_names(err, path, "record 1 (id 'r1')", "missing key(s) ['question']")


def test_missing_conversations_in_sharegpt(tmp_path):
    path = write_bench(tmp_path, [{"id": "x", "images": ["a.png"]}], name="mg.json")
    with pytest.raises(DataError) as err:
        read_sharegpt(path)
    assert_names(err, path, "record 0 (id 'x')", "missing key(s) ['conversations']")


@pytest.mark.parametrize("key, value, expected", [
    ("question", 5, "'question' must be str, got int"),
    ("images", "a.png", "'images' must be a non-empty list of paths"),
    ("answer", "0.1,0.2,0.3,0.4", "box must be 4 numbers"),
    ("answer_image", True, "'answer_image' must be int, got bool"),
])
def test_wrong_type_is_named(tmp_path, key, value, expected):
    path, _ = bad(tmp_path, **{key: value})
    with pytest.raises(DataError) as err:
        read_mig_bench(path)
    assert_names(err, path, "record 1 (id 'r1')", expected)


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"task": "diff",\n   "images": ["a.png"] "question": "q"}\n]\n')
    with pytest.raises(DataError) as err:
        read_mig_bench(path)
    assert_names(err, path, "malformed JSON at line 3, column 24")


def test_malformed_jsonl_line_is_a_bad_record(tmp_path):
    write_image(tmp_path / "a.png")
    path = tmp_path / "mg.jsonl"
    good = {"id": "ok", "images": ["a.png"], "conversations": [
        {"from": "human", "value": "<image>Where?"}, {"from": "gpt", "value": "<|box_start|>(1,2),(3,4)<|box_end|>"}]}
    path.write_text(json.dumps(good) + "\n" + '{"id": "broken", "images": [\n' + json.dumps(good) + "\n")
    with pytest.raises(DataError) as err:
        read_sharegpt(path)
    assert_names(err, path, "line 2: malformed JSON at column")
    result = read_sharegpt(path, on_error="skip")
    assert len(result.samples) == 2 and result.skipped == {"malformed_json": 1}


@pytest.mark.parametrize("conversations, expected", [
    ([{"from": "human", "value": "<image>Q"}], "must alternate human/gpt and end with gpt"),
    ([{"from": "gpt", "value": "<image>A"}, {"from": "human", "value": "Q"}], "only human turns may"),
    ([{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}], "0 <image> tag(s) in the human turns but 1"),
    ([{"from": "human", "value": "<image>Q"}, {"from": "bot", "value": "A"}], "from='bot'; expected human, gpt"),
    ([{"from": "human", "value": "<image>Q"}, {"from": "gpt"}], "must be an object with 'from' and 'value'"),
])
def test_malformed_conversation_is_named(tmp_path, conversations, expected):
    path = write_bench(tmp_path, [{"id": "c1", "images": ["a.png"], "conversations": conversations}], "mg.json")
    with pytest.raises(DataError) as err:
        read_sharegpt(path)
    assert_names(err, path, "record 0 (id 'c1')", expected)


# ------------------------------------------------------------------------------------------ boxes
def test_box_with_x2_before_x1(tmp_path):
    path, _ = bad(tmp_path, answer=[0.5, 0.2, 0.3, 0.4])
    with pytest.raises(DataError) as err:
        read_mig_bench(path)
    assert_names(err, path, "record 1 (id 'r1')", "box [0.5, 0.2, 0.3, 0.4] has x2 < x1")


def test_box_outside_the_image(tmp_path):
    path, _ = bad(tmp_path, answer=[0.1, 0.2, 1.3, 0.4])
    with pytest.raises(DataError) as err:
        read_mig_bench(path)
    assert_names(err, path, "record 1 (id 'r1')", "outside the image")


def test_sharegpt_box_outside_0_1000_is_named_with_its_turn(tmp_path):
    rec = {"id": "b1", "images": ["a.png"], "conversations": [
        {"from": "human", "value": "<image>Where?"},
        {"from": "gpt", "value": "<|box_start|>(100,100),(1200,300)<|box_end|>"}]}
    path = write_bench(tmp_path, [rec], "mg.json")
    with pytest.raises(DataError) as err:
        read_sharegpt(path)
    assert_names(err, path, "record 0 (id 'b1') turn 1", "(1200,300)", "outside the image")


@pytest.mark.parametrize("bbox, expected", [
    ([150, 10, 60, 40], "outside the image"),  # x + w = 210 > 200 px (beyond the 1 px tolerance)
    ([20, 10, -5, 40], "has x2 < x1"),
    ([20, 10, 60], "'bbox' must be [x, y, w, h]"),
])
def test_coco_bad_bbox_is_named(tmp_path, bbox, expected):
    inst = coco_instances()
    inst["annotations"][0]["bbox"] = bbox
    path, _ = write_coco_dataset(tmp_path, instances=inst)
    with pytest.raises(DataError) as err:
        read_coco_instances(path)
    assert_names(err, path, "annotation 0 (id 11)", expected)


def test_coco_box_overshooting_by_a_fraction_of_a_pixel_is_clamped(tmp_path):
    inst = coco_instances()
    inst["annotations"][0]["bbox"] = [150, 10, 50.4, 40]  # ends at 200.4 px of 200
    path, _ = write_coco_dataset(tmp_path, instances=inst)
    assert read_coco_instances(path).samples[0].answer[2] == 1.0


def test_refcoco_ref_to_a_missing_annotation(tmp_path):
    inst, refs = write_coco_dataset(tmp_path, refs=[{"ref_id": 7, "ann_id": 999, "split": "train",
                                                     "sentences": [{"sent_id": 1, "sent": "x"}]}])
    with pytest.raises(DataError) as err:
        read_refcoco(refs, inst)
    assert_names(err, refs, "ref 0 (ref_id 7)", "ann_id 999 is not in")


def test_refs_file_that_is_not_a_pickle(tmp_path):
    inst, refs = write_coco_dataset(tmp_path)
    refs.write_bytes(b"definitely not a pickle")
    with pytest.raises(DataError) as err:
        read_refcoco(refs, inst)
    assert_names(err, refs, "not a readable refs pickle")


# ------------------------------------------------------------------------------------------ tasks
def test_unknown_task_is_named(tmp_path):
    path, _ = bad(tmp_path, task="grounding_v2")
    with pytest.raises(DataError) as err:
        read_mig_bench(path)
    assert_names(err, path, "record 1 (id 'r1')", "unknown task 'grounding_v2'", "group_grounding")


def test_unknown_synth_task_fails_make_data(tmp_path):
    cfg = compose_cfg(["logger=csv", "+stages={data: {kind: make_data}}", "data.synth.tasks=[no_such_task]"], tmp_path)
    with pytest.raises(DataError, match="unknown task 'no_such_task'"):
        run_stages(cfg, tmp_path / "run")


def test_unknown_on_error_mode_is_a_config_error(tmp_path):
    cfg = compose_cfg(["logger=csv", "+stages={data: {kind: make_data}}", "data.on_error=ignore"], tmp_path)
    with pytest.raises(ConfigError, match="data.on_error"):
        run_stages(cfg, tmp_path / "run")


# ------------------------------------------------------------------------------- on_error = skip
def mixed_records() -> list[dict]:
    """Two good records and one of each bad kind (6 bad)."""
    def rec(i, **changes):
        r = good_record(i)
        r.update(changes)
        return {k: v for k, v in r.items() if v is not None}

    return [
        rec(0),
        rec(1, images=["a.png", "gone.png"]),  # missing image
        rec(2, question=None),  # missing key
        rec(3, question=["not", "text"]),  # wrong type
        rec(4, answer=[0.6, 0.2, 0.3, 0.4]),  # x2 < x1
        rec(5, answer=[0.1, 0.2, 0.3, 1.5]),  # outside the image
        rec(6, task="mystery"),  # unknown task
        rec(7),
    ]


EXPECTED_SKIPS = {"missing_image": 1, "missing_key": 1, "wrong_type": 1, "box_corners_swapped": 1,
                  "box_outside_image": 1, "unknown_task": 1}


def test_skip_counts_bad_records_by_reason_and_reports_them(tmp_path, caplog):
    path = write_bench(tmp_path, mixed_records())
    with pytest.raises(DataError, match="record 1 .*image not found"):
        read_mig_bench(path)  # the default: the first bad record stops everything
    caplog.set_level(logging.WARNING, logger="mig_data")
    result = read_mig_bench(path, on_error="skip")
    assert [s.id for s in result.samples] == ["r0", "r7"]
    assert dict(result.skipped) == EXPECTED_SKIPS
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 6 bad record(s)" in warning and str(path) in warning
    assert all(f"1 x {reason}" in warning for reason in EXPECTED_SKIPS)


def test_skip_counts_reach_the_make_data_summary(tmp_path, caplog):
    src = tmp_path / "src"
    src.mkdir()
    path = write_bench(src, mixed_records())
    write_corrupt_image(src / "c.png")
    records = mixed_records() + [dict(good_record(8), images=["a.png", "c.png"])]
    path.write_text(json.dumps(records))
    caplog.set_level(logging.WARNING, logger="mig_data")
    cfg = compose_cfg(["logger=csv", "+stages={data: {kind: make_data}}", "data=mig_bench", f"data.root={src}",
                       f"data.eval_file={path}", "data.on_error=skip", "data.verify_images=full"], tmp_path)
    summary = run_stages(cfg, tmp_path / "run")["data"].summary
    assert summary["eval"]["samples"] == 2
    assert summary["eval"]["skipped"] == summary["skipped"] == {**EXPECTED_SKIPS, "corrupt_image": 1}
    assert any("make_data: skipped 7 bad record(s) in all" in r.getMessage() for r in caplog.records)
    done = json.loads((run_stages(cfg, tmp_path / "run")["data"].dir / "done.json").read_text())
    assert done["summary"]["skipped"]["corrupt_image"] == 1  # recorded with the cached stage too


def test_skipping_every_record_is_an_error_not_an_empty_split(tmp_path):
    path = write_bench(tmp_path, [dict(good_record(0), task="mystery")])
    cfg = compose_cfg(["logger=csv", "+stages={data: {kind: make_data}}", "data=mig_bench", f"data.root={tmp_path}",
                       f"data.eval_file={path}", "data.on_error=skip"], tmp_path)
    with pytest.raises(DataError, match=r"the eval split has no samples left \(skipped: 1 x unknown_task\)"):
        run_stages(cfg, tmp_path / "run")
