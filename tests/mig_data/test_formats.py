"""Data formats, read and written: MIG-Bench, MGrounding/ShareGPT (multi-turn), COCO/RefCOCO through
the real pycocotools, and the Arrow split store the make_data stage writes and load_split reads."""

from __future__ import annotations

import json
import os
import time

import pytest

from mig_data.collate import IGNORE_INDEX, SFTCollator, generation_prompts
from mig_data.formats.coco import read_coco_instances, read_refcoco, write_coco
from mig_data.formats.mig_bench import read_mig_bench, write_mig_bench
from mig_data.formats.sharegpt import join_image_tags, read_sharegpt, split_image_tags, write_sharegpt
from mig_data.loading import ARROW_DIR, load_split
from mig_lab.graph import run_stages
from mig_models.builders import build_processor
from mig_models.tokenizer import build_tokenizer
from tests.conftest import compose_cfg
from tests.mig_data.data_files import MULTI_TURN, sharegpt_records, write_coco_dataset, write_sharegpt_dataset


def _processor(family: str):
    return build_processor(family, build_tokenizer("bpe"), 112 * 112, 112 * 112)


def _same_sample(a, b, skip=()):
    da, db = a.to_dict(), b.to_dict()
    for k in ("answer", *skip):
        da.pop(k), db.pop(k)
    assert da == db
    if "answer" not in skip:
        assert (a.answer is None) == (b.answer is None)
        if a.answer is not None:
            assert a.answer == pytest.approx(b.answer, abs=5e-5)  # the JSON keeps 4 decimals


# ------------------------------------------------------------------------------------- MIG-Bench
def test_mig_bench_round_trip_keeps_every_field(synth_data, tmp_path):
    samples = read_mig_bench(synth_data / "train.json").samples
    samples[0].turns = [{"role": "user", "content": "\nWhere?", "image_offsets": [0] * len(samples[0].images)},
                        {"role": "assistant", "content": samples[0].response, "image_offsets": []}]
    out = tmp_path / "elsewhere" / "copy.json"
    write_mig_bench(samples, out, root=synth_data)  # paths stay relative to the images' root
    again = read_mig_bench(out, root=synth_data).samples
    assert len(again) == len(samples) == 16
    for a, b in zip(samples, again):
        _same_sample(a, b)
    records = json.loads(out.read_text())
    assert all(not os.path.isabs(p) for r in records for p in r["images"])
    assert {"task", "images", "question", "answer", "additional_info", "need_format"} <= records[0].keys()


# -------------------------------------------------------------------------------------- ShareGPT
def test_image_tags_split_and_join_are_inverse():
    for value in ("<image>\n<image>\nQ?", "a <image> b<image>", "no images", "<image><image>"):
        text, offsets = split_image_tags(value)
        assert "<image>" not in text and len(offsets) == value.count("<image>")
        assert join_image_tags(text, offsets) == value


def test_sharegpt_reads_multi_turn_records_and_their_grounding_answer(tmp_path):
    path = write_sharegpt_dataset(tmp_path)
    result = read_sharegpt(path)
    assert not result.skipped
    mt, ordinal, region, text_only = result.samples

    assert mt.id == "mt-1" and mt.task == "free_form"  # MGrounding records name no task: data.default_task
    assert mt.images == [str((tmp_path / p).resolve()) for p in MULTI_TURN["images"]]
    assert [t["role"] for t in mt.turns] == ["user", "assistant", "user", "assistant"]
    assert mt.turns[0] == {"role": "user", "content": "\n\nWhich image shows the red circle?", "image_offsets": [0, 1]}
    assert mt.turns[2]["image_offsets"] == [len("Now look at this one too: ")]
    # the grounding answer: first box of the LAST gpt turn, its image named before it ("Image-3")
    assert mt.answer == pytest.approx([0.5, 0.5, 0.7, 0.9]) and mt.answer_image == 2
    assert mt.response == MULTI_TURN["conversations"][-1]["value"]
    assert mt.question == "Now look at this one too:  Where is it here?"

    assert ordinal.answer == pytest.approx([0.01, 0.02, 0.03, 0.04]) and ordinal.answer_image == 1  # "second image"
    assert region.task == "region" and region.answer_image == 0  # no mention: the task's rule (region: image 1)
    assert region.turns[0]["image_offsets"] == [0, 0]
    assert text_only.answer is None and text_only.answer_image is None
    assert text_only.response == "There are three shapes."


def test_sharegpt_file_round_trip_is_exact(tmp_path):
    path = write_sharegpt_dataset(tmp_path)
    samples = read_sharegpt(path).samples
    out = tmp_path / "again.json"
    write_sharegpt(samples, out, extras=False)  # only the keys LLaMA-Factory reads
    assert json.loads(out.read_text()) == [{k: r[k] for k in ("id", "images", "conversations")}
                                           for r in sharegpt_records()]
    write_sharegpt(samples, out)  # with extras: every sample field survives
    for a, b in zip(samples, read_sharegpt(out).samples):
        _same_sample(a, b)


def test_single_turn_samples_become_sharegpt_and_back(synth_data, tmp_path):
    samples = read_mig_bench(synth_data / "train.json").samples[:4]
    out = tmp_path / "synth_sharegpt.json"
    write_sharegpt(samples, out, root=synth_data)
    records = json.loads(out.read_text())
    n = len(samples[0].images)
    assert records[0]["conversations"][0]["value"] == "<image>\n" * n + samples[0].question
    assert records[0]["conversations"][1] == {"from": "gpt", "value": samples[0].response}
    again = read_sharegpt(out, root=synth_data).samples
    for a, b in zip(samples, again):
        _same_sample(a, b, skip=("turns",))
        assert b.turns[0]["image_offsets"] == list(range(len(a.images)))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_multi_turn_sft_batch_trains_on_every_assistant_turn(tmp_path, family):
    samples = read_sharegpt(write_sharegpt_dataset(tmp_path)).samples
    processor = _processor(family)
    tok = processor.tokenizer
    batch = SFTCollator(processor, family, 2048)(samples[:2])
    text = tok.decode(batch["input_ids"][0])
    # images sit where their tags were: two before the first question, one inside the second
    assert text.count("<|vision_start|>") == 3
    second_user = text.split("<|im_start|>user\n")[2]
    assert second_user.startswith("Now look at this one too: <|vision_start|>")
    labelled = tok.decode(batch["labels"][0][batch["labels"][0] != IGNORE_INDEX])
    if family == "qwen2_vl":
        assert labelled == ("Image-2: <|box_start|>(100,200),(300,400)<|box_end|><|im_end|>"
                            "In Image-3 it is at <|box_start|>(500,500),(700,900)<|box_end|>.<|im_end|>")
    else:  # absolute pixels of each box's own image after its resize (images 2 and 3 differ in shape)
        (h2, w2), (h3, w3) = (batch["image_grid_thw"][1:3, 1:] * 14).tolist()
        assert (h2, w2) != (h3, w3)
        box2 = [round(0.1 * w2), round(0.2 * h2), round(0.3 * w2), round(0.4 * h2)]
        box3 = [round(0.5 * w3), round(0.5 * h3), round(0.7 * w3), round(0.9 * h3)]
        assert labelled == (f'Image-2: {{"bbox_2d": {box2}}}<|im_end|>'
                            f'In Image-3 it is at {{"bbox_2d": {box3}}}.<|im_end|>')
    assert "Which image" not in labelled and "Where is it" not in labelled
    # the single-turn path is unchanged: the second sample's only reply is labelled
    row1 = tok.decode(batch["labels"][1][batch["labels"][1] != IGNORE_INDEX])
    assert row1.endswith("<|im_end|>") and row1.count("<|im_end|>") == 1


def test_multi_turn_generation_prompt_stops_before_the_last_answer(tmp_path):
    samples = read_sharegpt(write_sharegpt_dataset(tmp_path)).samples
    processor = _processor("qwen2_vl")
    prompts = generation_prompts(processor, "qwen2_vl", samples[:1])
    batch, hws = prompts.tensors, prompts.hws
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text.endswith("Where is it here?<|im_end|>\n<|im_start|>assistant\n")
    assert "Image-2: <|box_start|>(100,200),(300,400)<|box_end|>" in text  # earlier turns are context
    assert "(500,500)" not in text and len(hws[0]) == 3
    # the evaluator names the question and the images it shows: its own question with all images is the same prompt
    same = generation_prompts(processor, "qwen2_vl", samples[:1], questions=[samples[0].question],
                               image_subsets=[[0, 1, 2]])
    assert processor.tokenizer.decode(same.tensors["input_ids"][0]) == text
    # another question (a CoT step) or a subset of images (polling) is a single-turn prompt
    polled = generation_prompts(processor, "qwen2_vl", samples[:1], questions=[samples[0].question],
                                 image_subsets=[[2]])
    polled_text = processor.tokenizer.decode(polled.tensors["input_ids"][0])
    assert polled_text.count("<|vision_start|>") == 1 and "Image-2:" not in polled_text


# ---------------------------------------------------------------------------------- COCO/RefCOCO
def test_coco_instances_give_one_sample_per_uniquely_named_object(tmp_path):
    inst, _ = write_coco_dataset(tmp_path)
    samples = read_coco_instances(inst).samples
    # dogs (two in image 1) are ambiguous; the bus is a crowd annotation
    assert [s.id for s in samples] == ["coco-11", "coco-21"]
    cat, person = samples
    assert cat.task == "single_grounding" and cat.images == [str((tmp_path / "one.png").resolve())]
    assert cat.question == "Locate <|object_ref_start|>the cat<|object_ref_end|> in the image."
    assert cat.answer == pytest.approx([20 / 200, 10 / 100, 80 / 200, 50 / 100])  # xywh px -> xyxy normalised
    assert person.answer == pytest.approx([8 / 80, 16 / 160, 48 / 80, 96 / 160])
    assert cat.answer_image == 0 and cat.need_format and cat.meta["category"] == "cat"


def test_refcoco_refs_give_one_sample_per_expression_of_a_split(tmp_path):
    inst, refs = write_coco_dataset(tmp_path)
    train = read_refcoco(refs, inst, split="train").samples
    assert [s.id for s in train] == ["refcoco-0-100", "refcoco-0-101"]
    assert train[0].question == "Locate <|object_ref_start|>cat on the left<|object_ref_end|> in the image."
    assert train[1].answer == pytest.approx([0.1, 0.1, 0.4, 0.5])
    val = read_refcoco(refs, inst, split="val").samples
    assert len(val) == 1 and val[0].answer == pytest.approx([100 / 200, 50 / 100, 120 / 200, 70 / 100])
    assert val[0].meta["expression"] == "dog on the right" and val[0].meta["category"] == "dog"
    assert len(read_refcoco(refs, inst).samples) == 3


def test_coco_write_then_read_round_trips(tmp_path):
    inst, refs = write_coco_dataset(tmp_path / "src")
    samples = read_refcoco(refs, inst).samples
    out_inst, out_refs = tmp_path / "out" / "instances.json", tmp_path / "out" / "refs.p"
    out_inst.parent.mkdir()
    write_coco(samples, out_inst, out_refs, root=tmp_path / "src")
    again = read_refcoco(out_refs, out_inst, root=tmp_path / "src").samples
    assert [s.question for s in again] == [s.question for s in samples]
    assert [s.images for s in again] == [s.images for s in samples]
    for a, b in zip(samples, again):
        assert a.answer == pytest.approx(b.answer, abs=1e-9)
    # as an instances file: the cat's category is unique in its image, the dog's sentences share one object
    inst_only = read_coco_instances(out_inst, root=tmp_path / "src").samples
    assert {s.meta["category"] for s in inst_only} == {"dog"}


# ------------------------------------------------------------------------ Arrow store + make_data
def _data_cfg(tmp_path, *overrides):
    return compose_cfg(["logger=csv", "fabric=cpu", "+stages={data: {kind: make_data}}", *overrides], tmp_path)


def test_make_data_converts_once_into_arrow_that_load_split_reads(tmp_path):
    src = tmp_path / "mg"
    path = write_sharegpt_dataset(src)
    cfg = _data_cfg(tmp_path, "data.source=sharegpt", f"data.root={src}", f"data.train_file={path}",
                    f"data.eval_file={path}")
    first = run_stages(cfg, tmp_path / "run")["data"]
    assert first.summary["train"]["samples"] == 4 and first.summary["skipped"] == {}
    assert (first.dir / ARROW_DIR / "train" / "state.json").exists() and (first.dir / "train.json").exists()
    loaded = load_split(first.dir, "train")
    for a, b in zip(read_sharegpt(path).samples, loaded):
        assert a.to_dict() == b.to_dict()  # turns, meta and absolute image paths survive Arrow exactly

    # the Arrow copy is what load_split reads: the JSON is only for people
    (first.dir / "train.json").unlink()
    assert [s.id for s in load_split(first.dir, "train")] == [s.id for s in loaded]

    second = run_stages(cfg, tmp_path / "run")["data"]
    assert second.cached and second.dir == first.dir
    time.sleep(0.01)
    records = sharegpt_records()
    records[1]["id"] = "renamed"
    path.write_text(json.dumps(records, indent=1))  # the external file changed: the key must change
    third = run_stages(cfg, tmp_path / "run")["data"]
    assert not third.cached and third.dir != first.dir
    assert "renamed" in {s.id for s in load_split(third.dir, "train")}


def test_large_splits_skip_the_human_readable_json(tmp_path):
    inst, refs = write_coco_dataset(tmp_path / "coco")
    cfg = _data_cfg(tmp_path, "data=refcoco", f"data.root={tmp_path / 'coco'}", f"data.train_file={inst}",
                    f"data.eval_file={inst}", f"data.coco.refs_file='{refs}'", "data.json_max_samples=1")
    res = run_stages(cfg, tmp_path / "run")["data"]
    assert res.summary["train"]["samples"] == 2 and res.summary["eval"]["samples"] == 1
    assert not (res.dir / "train.json").exists() and (res.dir / "eval.json").exists()
    assert [s.meta["split"] for s in load_split(res.dir, "train")] == ["train", "train"]


def test_synth_make_data_keeps_its_json_and_adds_arrow(tmp_path):
    cfg = _data_cfg(tmp_path, "data.synth.n_train=3", "data.synth.n_eval=2")
    res = run_stages(cfg, tmp_path / "run")["data"]
    assert (res.dir / "train.json").exists() and (res.dir / ARROW_DIR / "eval").exists()
    from_json = read_mig_bench(res.dir / "train.json", root=res.dir).samples
    from_arrow = load_split(res.dir, "train")
    assert len(from_arrow) == len(from_json) == 3
    for a, b in zip(from_arrow, from_json):
        _same_sample(a, b)  # the Arrow copy keeps full precision, the JSON 4 decimals
