"""Free-form MIG data (Migician stage 2): cross-image links with exactly one answer, exact ground truth
on every turn, multi-turn samples that train on every answer, the mixture source, and the model teacher."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from omegaconf import OmegaConf

from mig_data.collate import IGNORE_INDEX, SFTCollator
from mig_data.cot.free_form_data import (
    TEMPLATE_1,
    FreeFormModelTeacher,
    ground_answer,
    model_teacher_samples,
    parse_qa,
    teacher_prompt,
)
from mig_data.cot.teachers import ModelTeacher
from mig_data.formats.common import check_turns
from mig_data.formats.sharegpt import read_sharegpt
from mig_data.loading import load_split
from mig_data.mixtures import build_mixture
from mig_data.schema import check_sample
from mig_data.synth.free_form import LINKS, Group, GroupObject, TemplateTeacher, build_group, gen_free_form
from mig_data.synth.generate import make_sample, sample_rng
from mig_data.synth.tasks import TASK_GENERATORS
from mig_lab.boxes import parse_response
from mig_lab.config import ModelConfig, SynthConfig
from mig_lab.graph import run_stages
from mig_models.builders import build_tiny, save_model
from tests.conftest import compose_cfg

N = 150


def synth_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(SynthConfig), overrides)


@pytest.fixture(scope="module")
def generated():
    cfg = synth_cfg()
    return [gen_free_form(sample_rng(0, "test", "free_form", i), cfg) for i in range(N)]


def scene_objects(item) -> list[list[dict]]:
    """Per image: the scene graph's objects as plain records (what the tests check links against)."""
    return [[{"oid": o.oid, "color": o.color, "shape": o.shape, "box": list(o.box)} for o in s.objects]
            for s in item.scenes]


def area(o) -> float:
    return (o["box"][2] - o["box"][0]) * (o["box"][3] - o["box"][1])


def centre(o) -> tuple[float, float]:
    return (o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2


def answers_of(link: str, ref: dict | None, image: list[dict], objects: list[list[dict]], k: int) -> list[dict]:
    """The objects of image k a link to `ref` admits, by the link's definition in migician.txt's terms."""
    if link == "same_color":
        return [o for o in image if o["color"] == ref["color"] and o["shape"] != ref["shape"]]
    if link == "same_shape":
        return [o for o in image if o["shape"] == ref["shape"] and o["color"] != ref["color"]]
    if link == "same_object":
        return [o for o in image if (o["color"], o["shape"]) == (ref["color"], ref["shape"])]
    if link == "odd_one_out":
        others = {(o["color"], o["shape"]) for i, objs in enumerate(objects) if i != k for o in objs}
        return [o for o in image if (o["color"], o["shape"]) not in others]
    if link == "size_contrast":  # the most different area, by a clear margin, at least 2x
        ratio = sorted((max(area(o), area(ref)) / min(area(o), area(ref)), o["oid"]) for o in image)[::-1]
        ok = ratio[0][0] >= 2 and (len(ratio) == 1 or ratio[0][0] >= 1.5 * ratio[1][0])
        return [o for o in image if ok and o["oid"] == ratio[0][1]]
    if link == "same_position":  # the nearest centre, clearly nearer than the rest
        d = sorted((math.dist(centre(o), centre(ref)), o["oid"]) for o in image)
        ok = d[0][0] <= 0.2 and (len(d) == 1 or d[1][0] >= 1.5 * d[0][0] + 0.05)
        return [o for o in image if ok and o["oid"] == d[0][1]]
    raise AssertionError(link)


def test_registered_as_a_mig_synth_task_for_the_stage_2_mixture():
    assert TASK_GENERATORS["free_form"] is gen_free_form
    stage2 = compose_cfg(["data=migician_stage2"]).data.mixture.sources
    assert list(stage2.m_grounding_stage2.tasks) == ["free_form"]


def test_same_seed_same_conversation_other_seed_differs():
    cfg = synth_cfg()
    a, b = (gen_free_form(sample_rng(3, "train", "free_form", 5), cfg) for _ in range(2))
    c = gen_free_form(sample_rng(3, "train", "free_form", 6), cfg)
    assert a.turns == b.turns and a.answer == b.answer and a.meta == b.meta
    assert a.turns != c.turns


def test_every_link_has_exactly_one_answer_and_it_is_the_target(generated):
    links = Counter()
    for item in generated:
        objects = scene_objects(item)
        for t in item.meta["turns"]:
            k = t["target_image"]
            ref = next((o for o in objects[t["ref_image"]] if o["oid"] == t["ref_oid"]), None) \
                if t["ref_image"] is not None else None
            assert t["link"] == "odd_one_out" or (ref is not None and t["ref_image"] != k), t  # a CROSS-image link
            hits = answers_of(t["link"], ref, objects[k], objects, k)
            assert [o["oid"] for o in hits] == [t["target_oid"]], (t, hits)
            assert hits[0]["box"] == pytest.approx(t["box"], abs=1e-6)
            links[t["link"]] += 1
    assert set(links) == set(LINKS), links  # every kind of connection occurs
    assert min(links.values()) >= 0.05 * sum(links.values()), links


def test_answers_carry_the_exact_box_in_the_named_image_and_questions_never_name_the_target(generated):
    n_turns = Counter()
    for item in generated:
        turns = item.turns
        n_turns[len(turns) // 2] += 1
        for t, user, assistant in zip(item.meta["turns"], turns[0::2], turns[1::2]):
            parsed = parse_response(assistant["content"], "qwen2_vl")  # the evaluation scorer reads it
            assert parsed.box == pytest.approx([round(v * 1000) / 1000 for v in t["box"]])  # 0-1000, exact
            assert parsed.image == t["target_image"] and parsed.well_formed
            assert t["target"] not in user["content"]  # referred to by the link, not by its name
            assert t["target"] in assistant["content"]  # ... which the answer then explains
        assert item.answer == pytest.approx(item.meta["turns"][-1]["box"], abs=1e-6)
        assert item.answer_image == item.meta["turns"][-1]["target_image"]
        assert item.response == turns[-1]["content"] and item.question == turns[-2]["content"]
    assert set(n_turns) == {1, 2, 3}  # multi-turn conversations, as MGrounding's
    follow_ups = sum("the object you just found" in u["content"] for it in generated for u in it.turns[2::2])
    assert follow_ups > 0  # later turns build on earlier answers


def test_groups_are_made_the_three_ways_the_paper_groups_images():
    cfg = synth_cfg(min_images=2, max_images=4)
    groups = [build_group(sample_rng(0, "g", "free_form", i), cfg) for i in range(60)]
    assert Counter(g.grouping for g in groups).keys() == {"random", "common", "similar"}
    for g in groups:
        assert 2 <= len(g.scenes) <= 4 and len(g.captions) == len(g.scenes)
        oids = [o.oid for objs in g.objects for o in objs]
        assert len(oids) == len(set(oids))  # distinct scenes: every object is its own object
        if g.grouping == "common":  # one kind in at least two images
            kinds = [{o.kind for o in objs} for objs in g.objects]
            assert any(sum(k in ks for ks in kinds) >= 2 for k in kinds[0] | kinds[1])
        if g.grouping == "similar":  # objects from a palette of 2 colours x 3 shapes
            objs = [o for image in g.objects for o in image]
            assert len({o.color for o in objs}) <= 2 and len({o.shape for o in objs}) <= 3


def test_sample_record_and_sft_labels_cover_every_answer(tmp_path):
    cfg = synth_cfg()
    samples = [make_sample(cfg, 0, "train", "free_form", i, tmp_path) for i in range(12)]
    multi = [s for s in samples if len(s.turns) >= 4][:2]
    assert multi
    for s in samples:
        check_sample(s, s.id)
        check_turns(s.turns, len(s.images), s.id)
        assert s.turns[0]["image_offsets"] == [0] * len(s.images)  # all images before the first question
    _, processor = build_tiny(compose_cfg([]).model, seed=0)
    batch = SFTCollator(processor, "qwen2_vl", 2048)(multi)
    tok = processor.tokenizer
    for row, s in enumerate(multi):
        labelled = tok.decode(batch["labels"][row][batch["labels"][row] != IGNORE_INDEX])
        answers = [t["content"] for t in s.turns if t["role"] == "assistant"]
        assert labelled == "".join(a + "<|im_end|>" for a in answers)


def test_stage_2_mixture_draws_free_form_samples_that_survive_the_arrow_store(tmp_path):
    from mig_data.loading import save_split

    cfg = compose_cfg(["data=migician_stage2", "data.mixture.n_train=20"])
    samples, info = build_mixture(cfg.data, 0, "train", tmp_path)
    assert info["sources"]["m_grounding_stage2"] == 10  # 49% of 20, largest remainder
    free = [s for s in samples if s.task == "free_form"]
    assert len(free) == 10 and all(s.turns and s.meta["source"] == "m_grounding_stage2" for s in free)
    save_split(samples, tmp_path, "train")
    back = {s.id: s for s in load_split(tmp_path, "train")}
    for s in free:
        assert back[s.id].turns == s.turns and back[s.id].answer == pytest.approx(s.answer)


def test_free_form_stage_with_the_template_teacher_writes_the_task_samples_as_sharegpt(tmp_path):
    cfg = compose_cfg(["experiment=free_form_data", "data.synth.n_train=4", "seed=2"], tmp_path)
    out = run_stages(cfg, tmp_path / "run")["free_form"].dir
    read = read_sharegpt(out / "free_form.json").samples
    cfg = synth_cfg()
    made = [make_sample(cfg, 2, "train", "free_form", i, tmp_path / "ref") for i in range(4)]
    assert [s.turns for s in read] == [s.turns for s in made]
    assert [v for s in read for v in s.answer] == pytest.approx([v for s in made for v in s.answer])
    assert [s.answer_image for s in read] == [s.answer_image for s in made]
    assert {s.task for s in read} == {"free_form"}


# -------------------------------------------------------------------------------- model teacher
def two_image_group() -> Group:
    objs = [[GroupObject(0, 0, "red", "circle", (0.1, 0.1, 0.3, 0.3)),
             GroupObject(0, 1, "blue", "star", (0.6, 0.6, 0.9, 0.9))],
            [GroupObject(1, 2, "red", "square", (0.5, 0.1, 0.8, 0.4)),
             GroupObject(1, 3, "green", "ring", (0.1, 0.6, 0.35, 0.85))]]
    return Group(scenes=[], objects=objs, grouping="random")


def test_teacher_prompt_is_the_papers_template_with_captions_and_boxed_objects():
    text = teacher_prompt(two_image_group())
    assert text.startswith(TEMPLATE_1) and "Strictly format the output as simple Q: A:" in text
    assert "Image-2: A grey background with" in text
    assert "red square (500,100),(800,400)" in text and "blue star (600,600),(900,900)" in text


def test_teacher_answers_are_snapped_to_annotated_objects_or_dropped_with_a_reason():
    output = ("Q: Which object in Image-2 shares the color of the round object in Image-1?\n"
              "A: The <ref>red square</ref> in Image-2 at (505,98) to (795,405) has the same red color.\n"
              "Q: Find the ring.\nA: It is at (100,600),(350,850).\n"
              "Q: Anything green in Image-1?\nA: In Image-1 there is (0,0),(999,999).\n"
              "Q: Describe Image-2.\nA: Two objects, no box here.")
    pairs = parse_qa(output)
    assert [q for q, _ in pairs][0].startswith("Which object in Image-2")
    results = [ground_answer(q, a, two_image_group()) for q, a in pairs]
    assert [reason for _, reason in results] == ["ok", "no_image", "no_match", "no_box"]
    qa = results[0][0]
    assert qa.target.oid == 2 and qa.target.image == 1
    parsed = parse_response(qa.answer, "qwen2_vl")
    assert parsed.box == pytest.approx((0.5, 0.1, 0.8, 0.4)) and parsed.well_formed  # the exact box, canonical
    assert "<|object_ref_start|>red square<|object_ref_end|>" in qa.answer


def test_model_teacher_runs_a_local_vlm_through_our_generation_code(tmp_path):
    model, processor = build_tiny(compose_cfg([]).model, seed=0)
    save_model(model, processor, tmp_path / "teacher")
    model_cfg = OmegaConf.structured(ModelConfig(name="teacher", pretrained=True, path=str(tmp_path / "teacher")))
    teacher = FreeFormModelTeacher(ModelTeacher(model_cfg, str(tmp_path / "teacher"), temperature=0.0,
                                                max_new_tokens=8))
    samples, dropped = model_teacher_samples(synth_cfg(), teacher, seed=0, split="train", n=3, out_dir=tmp_path)
    # a random tiny model writes no Q:/A: pairs: every group is counted as dropped, none kept silently
    assert teacher.stats["no_qa"] == 3 and dropped["empty_group"] == 3 - len(samples)
    assert len(list((tmp_path / "images" / "train" / "free_form").glob("*.png"))) >= 6
    cfg = compose_cfg(["experiment=free_form_data", "data.synth.n_train=2", "cot.teacher.kind=model",
                       f"cot.teacher.model_path={tmp_path / 'teacher'}", "cot.teacher.max_new_tokens=8"], tmp_path)
    stats = json.loads((run_stages(cfg, tmp_path / "run")["free_form"].dir / "stats.json").read_text())
    assert stats["groups"] == 2 and stats["samples"] + stats["dropped"].get("empty_group", 0) == 2


def test_template_teacher_follows_the_teacher_interface():
    cfg = synth_cfg()
    rngs = [sample_rng(0, "t", "free_form", i) for i in range(5)]
    groups = [build_group(r, cfg) for r in rngs]
    out = TemplateTeacher(max_turns=1).compose(groups, rngs)
    assert len(out) == 5 and all(len(qas) <= 1 for qas in out)
    for g, qas in zip(groups, out):
        for qa in qas:
            assert qa.target in g.objects[qa.target.image]
