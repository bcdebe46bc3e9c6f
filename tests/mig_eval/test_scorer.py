"""The standalone scorer `python scripts/score_predictions.py`: Migician's semantics, the papers' averaging,
both coordinate conventions (Qwen2.5-VL through each image's own resize) and clear input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from mig_data.schema import DataError
from mig_eval.score import read_pred_jsonl, score_file
from mig_lab.boxes import resized_hw
from scripts.score_predictions import main
from tests.conftest import REPO


@pytest.fixture
def bench(tmp_path):
    """A MIG-Bench-format file: two diff records and one common-object record, images of two sizes."""
    img = tmp_path / "images"
    img.mkdir()
    Image.new("RGB", (640, 480), "gray").save(img / "a.png")
    Image.new("RGB", (200, 400), "gray").save(img / "b.png")
    pair = ["./images/a.png", "./images/b.png"]
    records = [
        {"task": "diff", "images": pair, "question": "Compare these two images carefully and give me the "
         "coordinates of their difference. ", "answer": [0.1, 0.2, 0.5, 0.6], "additional_info": "", "need_format": True},
        {"task": "diff", "images": pair, "question": "Compare these two images carefully and give me the "
         "coordinates of their difference. ", "answer": [0.2, 0.2, 0.4, 0.4], "additional_info": "", "need_format": True},
        {"task": "common_object", "images": pair, "question": "These images share one object in common. "
         "Recognize and locate this object in the 1th image. ", "answer": [0.0, 0.0, 0.5, 0.5],
         "additional_info": "", "need_format": True},
    ]
    path = tmp_path / "MIG_data.json"
    path.write_text(json.dumps(records))
    return path


def write_preds(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_cli_writes_per_task_metrics_and_the_papers_average(bench, tmp_path):
    pred = write_preds(tmp_path / "pred.jsonl", [
        {"index": 0, "response": "<|box_start|>(100,200),(500,600)<|box_end|>"},  # IoU 1
        {"index": 1, "response": "I don't know."},  # no box: IoU 0
        {"index": 2, "response": "It is at (0,0),(500,400)", "extra": "ignored"},  # IoU 0.8
    ])
    out = tmp_path / "metrics.json"
    proc = subprocess.run([sys.executable, "scripts/score_predictions.py", "--bench", str(bench), "--pred", str(pred),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text())
    assert set(m["tasks"]) == {"diff", "common_object"}
    for task in m["tasks"].values():
        assert {"acc@0.5", "acc@0.3", "acc@0.7", "miou", "n"} <= task.keys()
    assert m["tasks"]["diff"]["acc@0.5"] == 0.5 and m["tasks"]["diff"]["n"] == 2
    assert m["tasks"]["diff"]["miou"] == pytest.approx(0.5)
    co = m["tasks"]["common_object"]
    assert co["acc@0.5"] == 1.0 and co["acc@0.7"] == 1.0 and co["miou"] == pytest.approx(0.8)
    # the papers average per-task scores (0.5 and 1.0), not samples (2 of 3)
    assert m["overall"]["acc@0.5"] == pytest.approx(0.75)
    assert m["groups"]["spontaneous"]["acc@0.5"] == pytest.approx(0.75)
    assert m["scorer"]["convention"] == "qwen2_vl"


def test_qwen25_pixels_map_through_each_images_resize(bench, tmp_path):
    # record 0's answer lies in image 2 (200 x 400 px on disk), resized by the Qwen2.5-VL defaults
    h, w = resized_hw(200, 400, 3136, 12845056)
    x1, y1, x2, y2 = round(0.1 * w), round(0.2 * h), round(0.5 * w), round(0.6 * h)
    good = {"index": 0, "response": f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}'}
    pred = write_preds(tmp_path / "pred.jsonl", [good, {"index": 1, "response": ""}, {"index": 2, "response": ""}])
    _, recs = score_file(bench, pred, convention="qwen2_5_vl")
    assert recs[0]["iou"] > 0.97
    # the same pixels read through image 1's size (640 x 480) would miss
    h1, w1 = resized_hw(640, 480, 3136, 12845056)
    assert (h1, w1) != (h, w)
    # the pixel-limit flags change the resize the pixels are read in
    _, small = score_file(bench, pred, convention="qwen2_5_vl", min_pixels=3136, max_pixels=56 * 56 * 4)
    assert resized_hw(200, 400, 3136, 56 * 56 * 4) != (h, w) and small[0]["iou"] < 0.5
    # rc 0 through main() with the flag spelled as users type it
    assert main(["--bench", str(bench), "--pred", str(pred), "--out", str(tmp_path / "m.json"),
                 "--convention", "qwen2_5_vl", "--per-record", str(tmp_path / "r.jsonl")]) == 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3


def test_migician_y_rescale_flag(bench, tmp_path):
    pred = write_preds(tmp_path / "p.jsonl", [{"index": i, "response": "(100,200),(500,600)"} for i in range(3)])
    plain, _ = score_file(bench, pred)
    scaled, recs = score_file(bench, pred, y_rescale=True)
    assert recs[0]["box"] == pytest.approx([0.1, 0.21, 0.5, 0.66])
    assert scaled.tasks["diff"]["miou"] != plain.tasks["diff"]["miou"]


@pytest.mark.parametrize("lines, message", [
    (['{"index": 0, "response": "x"}', '{"index": 1, "response": '], "line 2: malformed JSON"),
    (['{"response": "x"}'], "line 1: missing key 'index'"),
    (['{"index": 0}'], "line 1: missing key 'response'"),
    (['{"index": 3, "response": "x"}'], "line 1: index 3 is out of range; the bench file has 3 records"),
    (['{"index": -1, "response": "x"}'], "index -1 is out of range"),
    (['{"index": "0", "response": "x"}'], "line 1: 'index' must be an integer"),
    (['{"index": 0, "response": "x"}', '', '{"index": 0, "response": "y"}'], "line 3: a second prediction for index 0"),
    (['[1, 2]'], "line 1: expected a JSON object"),
])
def test_bad_prediction_files_fail_naming_the_line(bench, tmp_path, lines, message):
    pred = write_preds(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_pred_jsonl(pred, 3)
    assert main(["--bench", str(bench), "--pred", str(pred), "--out", str(tmp_path / "m.json")]) == 2


def test_missing_predictions_fail_unless_allowed(bench, tmp_path, capsys):
    pred = write_preds(tmp_path / "p.jsonl", [{"index": 0, "response": "(100,200),(500,600)"}])
    with pytest.raises(DataError, match=r"no prediction for 2 of 3 bench records \(indices 1, 2\)"):
        score_file(bench, pred)
    m, recs = score_file(bench, pred, allow_missing=True)
    assert m.scorer["missing"] == 2 and [r["missing"] for r in recs] == [False, True, True]
    assert m.tasks["diff"]["acc@0.5"] == 0.5
    assert main(["--bench", str(bench), "--pred", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "m")]) == 2
    assert "prediction file not found" in capsys.readouterr().err


def test_bad_bench_file_names_the_record(tmp_path):
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps([{"task": "diff", "images": ["x.png"], "question": "q"}]))
    pred = write_preds(tmp_path / "p.jsonl", [{"index": 0, "response": ""}])
    with pytest.raises(DataError, match=r"record 0.*missing key"):
        score_file(bench, pred)
