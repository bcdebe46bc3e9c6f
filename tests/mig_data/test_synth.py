"""MIG-Synth generators: determinism, answers on the right pixels, each task's invariants, the
MIG-Bench round trip, parallel generation, config checks and the preview sheet."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from mig_data.formats.mig_bench import read_mig_bench
from mig_data.schema import MIG_TASKS
from mig_data.synth.generate import generate_split, make_sample, sample_rng
from mig_data.synth.geometry import View, box_frame, inside, sub_box
from mig_data.synth.items import seen
from mig_data.synth.scene import Scene, crop_pixels, position_ramp, render
from mig_data.synth.tasks import TASK_GENERATORS
from mig_lab.config import ConfigError, SynthConfig
from tests.conftest import compose_cfg

SIZE = 112
N = 16  # samples per task and check
BOX_TASKS = sorted(t for t in TASK_GENERATORS if t != "understanding")
OBJECT_TASKS = [t for t in BOX_TASKS if t not in ("region", "correspondence")]  # the answer is a whole object


def synth_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.structured(SynthConfig), overrides)


def items(task: str, n: int = N, cfg=None):
    cfg = cfg or synth_cfg()
    return [TASK_GENERATORS[task](sample_rng(0, "test", task, i), cfg) for i in range(n)]


def pixels(scene: Scene) -> np.ndarray:
    return np.asarray(render(scene, SIZE)).astype(np.int16)


def drawn_box(scene: Scene, oid: int, window: list[float] | None = None) -> np.ndarray:
    """Pixel box (x1, y1, x2, y2) of what object `oid` paints: render with and without it."""
    full = copy.deepcopy(scene)
    full.marks = []
    bare = copy.deepcopy(full)
    bare.objects = [o for o in bare.objects if o.oid != oid]
    mask = (pixels(full) != pixels(bare)).any(-1)
    if window is not None:  # keep the pixels inside a (normalised) window only
        x1, y1, x2, y2 = (round(v * (SIZE - 1)) for v in window)
        keep = np.zeros_like(mask)
        keep[y1:y2 + 1, x1:x2 + 1] = True
        mask &= keep
    ys, xs = np.nonzero(mask)
    assert len(xs), f"object {oid} paints no pixel"
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()])


def assert_tight(box_px: np.ndarray, answer: list[float], tol_px: float = 1.0) -> None:
    """The drawn pixels' box matches the answer within rasterisation (pixel k sits at k / (SIZE - 1))."""
    want = np.array(answer) * (SIZE - 1)
    assert np.abs(box_px - want).max() <= tol_px + 1e-6, f"drawn {box_px.tolist()} vs answer {want.round(1).tolist()}"


def kinds(scene: Scene) -> list[tuple[str, str]]:
    return [(o.color, o.shape) for o in scene.objects]


def asked_image(question: str) -> int:
    return int(re.search(r"in the (\d+)th image", question).group(1)) - 1  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("task", sorted(TASK_GENERATORS))
def test_same_seed_same_sample_and_pixels_other_index_differs(task, tmp_path):
    cfg = synth_cfg()
    a = make_sample(cfg, 7, "train", task, 3, tmp_path / "a")
    b = make_sample(cfg, 7, "train", task, 3, tmp_path / "b")
    c = make_sample(cfg, 7, "train", task, 4, tmp_path / "c")
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k != "images"}  # noqa: E731
    assert strip(a) == strip(b)
    for pa, pb in zip(a.images, b.images):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    assert strip(a) != strip(c)
    assert any(not np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pc)))
               for pa, pc in zip(a.images, c.images)) or len(a.images) != len(c.images)


# ----------------------------------------------------------------------- the meta contract
@pytest.mark.parametrize("task", sorted(TASK_GENERATORS))
def test_meta_names_target_scene_graph_and_difficulty(task):
    for it in items(task, 8):
        m = it.meta
        assert m["num_images"] == len(it.scenes) and isinstance(m["distractors"], int) and m["distractors"] >= 0
        assert "target" in m and "target_oid" in m
        if it.answer is not None:
            assert 0 <= it.answer_image < len(it.scenes)
            assert all(0.0 <= v <= 1.0 for v in it.answer) and it.answer[0] < it.answer[2] and it.answer[1] < it.answer[3]
        if "query" in m:
            assert 0 <= m["query"]["image"] < len(it.scenes)
        # an oid is one object: unique within an image, one kind across images (but a diff's change)
        looks: dict[int, set] = {}
        for s in it.scenes:
            assert len({o.oid for o in s.objects}) == len(s.objects)
            for o in s.objects:
                looks.setdefault(o.oid, set()).add((o.color, o.shape))
        assert all(len(v) == 1 for oid, v in looks.items() if not (task.endswith("diff") and oid == m["target_oid"]))


def test_image_counts_follow_config():
    assert {len(it.scenes) for it in items("object_tracking", 24)} <= {4, 5, 6}
    assert {len(it.scenes) for it in items("common_object", 24)} <= {2, 3, 4}
    cfg = synth_cfg(task_images={"common_object": [5, 6], "region": [2, 2]}, image_size=96)
    assert {len(it.scenes) for it in items("common_object", 12, cfg)} <= {5, 6}
    assert {len(it.scenes) for it in items("region", 12, cfg)} == {2}
    for task in ("diff", "view_diff", "refer_grounding", "reasoning", "correspondence"):
        assert {len(it.scenes) for it in items(task, 8, cfg)} == {2}


def test_distinct_colors_gives_every_object_of_an_image_its_own_colour():
    cfg = synth_cfg(min_objects=4, max_objects=4, distinct_colors=True)
    scenes = [it.scenes[0] for it in items("single_grounding", 40, cfg)]
    assert all(len({o.color for o in s.objects}) == len(s.objects) for s in scenes)
    assert sum(len(s.objects) for s in scenes) >= 150  # the images really hold several objects
    shared = [it.scenes[0] for it in items("single_grounding", 40, synth_cfg(min_objects=4, max_objects=4))]
    assert any(len({o.color for o in s.objects}) < len(s.objects) for s in shared)  # off by default


# ------------------------------------------------------------------- answers on the right pixels
@pytest.mark.parametrize("task", OBJECT_TASKS)
def test_answer_box_tightly_bounds_the_target_and_centre_has_its_colour(task):
    from mig_data.synth.scene import COLORS

    for it in items(task):
        scene = it.scenes[it.answer_image]
        target = scene.find(it.meta["target_oid"])
        if target is None:  # diff / view_diff "removed": the answer is the empty place (checked below)
            assert it.meta["change"] == "removed"
            continue
        assert_tight(drawn_box(scene, target.oid), it.answer)
        if target.shape != "ring":
            x = round((it.answer[0] + it.answer[2]) / 2 * (SIZE - 1))
            y = round((it.answer[1] + it.answer[3]) / 2 * (SIZE - 1))
            want = np.array(COLORS[target.color])
            if scene.background == "position":  # the position cue tints objects too: red + x, green + y
                want = np.clip(want + [position_ramp(SIZE)[x], position_ramp(SIZE)[y], 0], 0, 255)
            assert tuple(pixels(scene)[y, x]) == tuple(want)


# ------------------------------------------------------------------------------ task invariants
def _objects_by_oid(scene: Scene) -> dict:
    return {o.oid: (o.color, o.shape, tuple(round(v, 9) for v in o.box)) for o in scene.objects}


def test_diff_exactly_one_object_differs_and_only_its_pixels_change():
    changes = set()
    for it in items("diff", 24):
        before, after = (_objects_by_oid(s) for s in it.scenes)
        differing = {oid for oid in before.keys() | after.keys() if before.get(oid) != after.get(oid)}
        assert differing == {it.meta["target_oid"]}
        changes.add(it.meta["change"])
        changed = (pixels(it.scenes[0]) != pixels(it.scenes[1])).any(-1)
        ys, xs = np.nonzero(changed)
        assert len(xs)
        assert_inside = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
        want = np.array(it.answer) * (SIZE - 1)
        assert (assert_inside[:2] >= want[:2] - 1).all() and (assert_inside[2:] <= want[2:] + 1).all()
        if it.meta["change"] == "removed":
            assert_tight(drawn_box(it.scenes[0], it.meta["target_oid"]), it.answer)
    assert changes == {"added", "removed", "recolored", "reshaped"}


def test_view_diff_is_one_change_under_a_view_with_minor_clutter_changes():
    rotated = 0
    for it in items("view_diff", 24, synth_cfg(clutter=0.3)):
        view = View(*it.meta["view"])
        rotated += view.angle != 0
        first, second = it.scenes
        expected = {o.oid: seen(o, view) for o in first.objects}
        got = {o.oid: o for o in second.objects}
        differing = {oid for oid in expected.keys() | got.keys()
                     if oid not in expected or oid not in got or (expected[oid].color, expected[oid].shape) !=
                     (got[oid].color, got[oid].shape)}
        assert differing == {it.meta["target_oid"]}
        for oid in (expected.keys() & got.keys()) - {it.meta["target_oid"]}:  # the others moved with the view
            assert np.allclose(expected[oid].box, got[oid].box)
            assert inside(got[oid].box)
        if it.meta["change"] == "removed":
            assert np.allclose(expected[it.meta["target_oid"]].box, it.answer)
            assert all(not _overlap(o.box, it.answer) for o in second.objects)
        assert len(it.meta["minor_changes"]) == 2
        assert second.clutter != [list(view.point(c[:2])) + [c[2] * view.scale] for c in first.clutter]
    assert rotated > 0


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_common_object_is_in_every_image_once_and_is_the_only_shared_kind():
    for it in items("common_object", 24):
        name = tuple(it.meta["target"].split())
        per_image = [kinds(s) for s in it.scenes]
        assert all(k.count(name) == 1 for k in per_image)
        assert set.intersection(*(set(k) for k in per_image)) == {name}
        assert all(len(s.objects) >= 2 for s in it.scenes)
        assert it.answer_image == asked_image(it.question)
        assert it.question.startswith("These images share one object in common.")


def test_object_tracking_marks_the_target_in_frame_one_and_moves_smoothly():
    for it in items("object_tracking", 16, synth_cfg(lookalike_prob=0.5)):
        first = it.scenes[0].find(0)
        assert first is not None and it.scenes[0].marks == [first.box]
        nums = [int(v) / 1000 for v in re.findall(r"\d+", it.question.split("box(")[1].split(")")[0] +
                                                 it.question.split("box(")[1].split(")")[1])]
        assert np.allclose(nums, first.box, atol=6e-4)
        assert all(not s.marks for s in it.scenes[1:])
        assert it.answer_image == asked_image(it.question) >= 1
        oids = {o.oid for o in it.scenes[0].objects}
        for a, b in zip(it.scenes, it.scenes[1:]):
            assert {o.oid for o in b.objects} == oids
            for o in a.objects:
                p = b.find(o.oid)
                assert (p.color, p.shape) == (o.color, o.shape)
                assert math.dist(o.center, p.center) < 0.2 and inside(p.box)
            assert all(not _overlap(x.box, y.box) for x in b.objects for y in b.objects if x.oid < y.oid)


def test_multi_view_images_are_similar_views_of_one_world():
    for it in items("multi_view", 16):
        first = it.scenes[0].find(0)
        assert it.scenes[0].marks == [first.box] and f"{first.box[0] * 1000:.0f}" in it.question
        assert it.answer_image == asked_image(it.question) >= 1
        for scene in it.scenes:
            target = scene.find(0)
            assert target is not None and inside(target.box)
        # distances between the objects seen in image 1 and image k scale by one factor
        k = it.scenes[it.answer_image]
        shared = [o.oid for o in it.scenes[0].objects if k.find(o.oid) is not None]
        ratios = [math.dist(k.find(a).get_frame()[:2], k.find(b).get_frame()[:2]) /
                  math.dist(it.scenes[0].find(a).get_frame()[:2], it.scenes[0].find(b).get_frame()[:2])
                  for i, a in enumerate(shared) for b in shared[i + 1:]]
        assert max(ratios) - min(ratios) < 1e-6 if ratios else True


def test_region_crops_are_pixel_identical_to_the_source_area():
    for it in items("region", 16):
        source = np.asarray(render(it.scenes[0], SIZE))
        for r, region in zip(it.meta["regions"], it.scenes[1:]):
            crop = np.asarray(render(region, SIZE))
            x1, y1, x2, y2 = crop_pixels(r["box"], SIZE)
            assert np.array_equal(crop, source[y1:y2, x1:x2])
            anchor = it.scenes[0].find(r["anchor_oid"])
            assert r["box"][0] <= anchor.box[0] and r["box"][2] >= anchor.box[2]
            area = (r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1])
            assert 0.15 <= area <= 0.55
        k = int(re.search(r"the (\d+)th region", it.question).group(1)) - 1
        assert it.answer == it.meta["regions"][k]["box"] and it.answer_image == 0
        # the answer window, cut from the source, is exactly the k-th region picture
        x1, y1, x2, y2 = crop_pixels(it.answer, SIZE)
        assert np.array_equal(source[y1:y2, x1:x2], np.asarray(render(it.scenes[k + 1], SIZE)))


def test_refer_grounding_shows_the_target_alone_then_among_distractors():
    for it in items("refer_grounding"):
        ref, scene = it.scenes
        assert len(ref.objects) == 1 and ref.objects[0].area > 0.2
        assert kinds(scene).count(kinds(ref)[0]) == 1 and len(scene.objects) >= 2
        assert scene.find(0) is not None and it.meta["query"]["oid"] == 0


def test_reasoning_relation_has_exactly_one_answer():
    relations = set()
    for it in items("reasoning", 40):
        ref = it.scenes[0].objects[0]
        objs = it.scenes[1].objects
        target = it.scenes[1].find(it.meta["target_oid"])
        rel = it.meta["relation"]
        relations.add(rel)
        if rel == "same_color":
            fits = [o for o in objs if o.color == ref.color and o.shape != ref.shape]
        elif rel == "same_shape":
            fits = [o for o in objs if o.shape == ref.shape and o.color != ref.color]
        elif rel in ("larger", "smaller"):
            copies = sorted((o for o in objs if (o.color, o.shape) == (ref.color, ref.shape)), key=lambda o: o.area)
            assert len(copies) == 2 and copies[1].area > 1.5 * copies[0].area
            fits = [copies[-1] if rel == "larger" else copies[0]]
        else:
            (anchor,) = [o for o in objs if (o.color, o.shape) == (ref.color, ref.shape)]
            others = sorted((o for o in objs if o is not anchor), key=lambda o: math.dist(o.center, anchor.center))
            assert math.dist(others[1].center, anchor.center) > math.dist(others[0].center, anchor.center)
            fits = others[:1]
        assert fits == [target], rel
        assert it.question.endswith(" Find it and locate it in the second image. ")
    assert relations == {"same_color", "same_shape", "larger", "smaller", "nearest"}


def test_correspondence_part_is_the_same_part_of_the_same_kind_of_object():
    for it in items("correspondence", 24):
        ref = it.scenes[0].objects[0]
        target = it.scenes[1].find(it.meta["target_oid"])
        assert [o for o in it.scenes[1].objects if o.shape == ref.shape] == [target]
        (mark,) = it.scenes[0].marks
        # the same position relative to each object's box
        rel = lambda b, o: [(b[0] - o.box[0]) / (o.box[2] - o.box[0]), (b[1] - o.box[1]) / (o.box[3] - o.box[1]),  # noqa: E731
                            (b[2] - o.box[0]) / (o.box[2] - o.box[0]), (b[3] - o.box[1]) / (o.box[3] - o.box[1])]
        assert np.allclose(rel(mark, ref), rel(it.answer, target), atol=1e-9)
        # and the answer tightly bounds the target's pixels inside that part of its frame (the
        # part is cut geometrically; cutting the pixel mask half a pixel off a sloped edge moves
        # its end by up to ~2 px on the star's flat points)
        window = sub_box(box_frame(target.box), tuple(it.meta["part_window"]))
        assert_tight(drawn_box(it.scenes[1], target.oid, window), it.answer, tol_px=2.0)


def test_group_and_single_grounding_name_a_unique_object():
    for task in ("group_grounding", "single_grounding"):
        for it in items(task):
            name = tuple(it.meta["target"].split())
            assert sum(k == name for s in it.scenes for k in kinds(s)) == 1
            assert f"the {it.meta['target']}<|object_ref_end|>" in it.question


def test_single_grounding_target_position_does_not_hint_which_object_is_named():
    """With two objects, the target is the more central one half the time (the box placed first
    used to go to the target: it was the more central one ~60% of the time, a cue a model learned
    instead of reading the query)."""
    cfg = synth_cfg(min_objects=2, max_objects=2)
    off_centre = lambda o: abs(o.center[0] - 0.5) + abs(o.center[1] - 0.5)  # noqa: E731
    n, central = 2000, 0
    for it in items("single_grounding", n, cfg):
        target, other = sorted(it.scenes[0].objects, key=lambda o: o.oid)
        central += off_centre(target) < off_centre(other)
    assert abs(central / n - 0.5) < 0.04, central / n  # binomial sd 0.011



def test_many_queries_per_image_ask_unique_objects_in_turn_and_train_on_every_answer(tmp_path):
    from mig_data.collate import IGNORE_INDEX, SFTCollator
    from mig_lab.boxes import qwen2_box
    from mig_models.builders import build_tiny

    cfg = synth_cfg(min_objects=3, max_objects=4, queries_per_image=3)
    for it in items("single_grounding", cfg=cfg):
        asked = [t for t in it.turns if t["role"] == "user"]
        answers = [t["content"] for t in it.turns if t["role"] == "assistant"]
        assert [t["role"] for t in it.turns] == ["user", "assistant"] * len(asked)
        assert 1 <= len(asked) <= 3 and asked[0]["image_offsets"] == [0]
        assert all(t["image_offsets"] == [] for t in asked[1:])
        assert asked[-1]["content"] == it.question and answers[-1] == qwen2_box(it.answer)  # the target last
        named = [re.search(r"the (\w+) (\w+)<", t["content"]).groups() for t in asked]
        assert len(set(named)) == len(named)
        for (color, shape), box in zip(named, answers):
            (obj,) = [o for o in it.scenes[0].objects if (o.color, o.shape) == (color, shape)]  # unique kind
            assert box == qwen2_box(obj.box)
    assert max(len(it.turns) for it in items("single_grounding", cfg=cfg)) == 6
    one = items("single_grounding", 4)  # the default: one query, no turns, the same samples as before
    assert all(it.turns is None for it in one)

    samples = [make_sample(cfg, 0, "train", "single_grounding", i, tmp_path) for i in range(2)]
    _, processor = build_tiny(compose_cfg([]).model, seed=0)
    batch = SFTCollator(processor, "qwen2_vl", 2048)(samples)
    for row, s in enumerate(samples):
        labelled = processor.tokenizer.decode(batch["labels"][row][batch["labels"][row] != IGNORE_INDEX])
        assert labelled == "".join(t["content"] + "<|im_end|>" for t in s.turns if t["role"] == "assistant")


def test_understanding_answers_are_exact():
    seen_types = set()
    for it in items("understanding", 60):
        m, scenes = it.meta, it.scenes
        qtype, asked = m["question_type"], m["asked"]
        seen_types.add((m["variant"], qtype))
        assert it.answer is None and it.need_format is False
        objs = scenes[asked["image"]].objects if "image" in asked else None
        if qtype == "count_color":
            want = str(sum(o.color == asked["color"] for o in objs))
        elif qtype == "count_shape":
            want = str(sum(o.shape == asked["shape"] for o in objs))
        elif qtype == "color_of":
            (obj,) = [o for o in objs if o.shape == asked["shape"]]
            want = obj.color
        elif qtype == "exists":
            want = "yes" if (asked["color"], asked["shape"]) in kinds(scenes[asked["image"]]) else "no"
        elif qtype == "which_image":
            holders = [i for i, s in enumerate(scenes) for k in kinds(s) if k == (asked["color"], asked["shape"])]
            assert len(holders) == 1
            want = f"Image-{holders[0] + 1}"
        else:
            want = str(sum(any(o.shape == asked["shape"] for o in s.objects) for s in scenes))
        assert it.response == want, (qtype, it.question)
        for s in scenes:  # every object in the scene graph is visible
            for o in s.objects:
                drawn_box(s, o.oid)
    assert {q for _, q in seen_types} == {"count_color", "count_shape", "color_of", "exists", "which_image",
                                          "count_images"}


# ------------------------------------------------------------------- files, config, parallelism
def test_mig_bench_round_trip_for_every_task(tmp_path):
    cfg = compose_cfg([f"data.synth.tasks=[{','.join(sorted(TASK_GENERATORS))}]", "data.synth.n_eval=2"]).data.synth
    samples = generate_split(cfg, seed=0, split="eval", out_dir=tmp_path)
    back = read_mig_bench(tmp_path / "eval.json").samples
    assert len(back) == len(samples) == 2 * len(TASK_GENERATORS)
    assert {s.task for s in back} == set(TASK_GENERATORS) >= set(MIG_TASKS)
    for a, b in zip(samples, back):
        assert (b.id, b.task, b.question, b.response, b.need_format, b.additional_info) == \
               (a.id, a.task, a.question, a.response, a.need_format, a.additional_info)
        assert b.images == [str(p) for p in a.images] and b.meta == json.loads(json.dumps(a.meta))
        assert (b.answer is None) == (a.answer is None)
        if a.answer is not None:  # (the reader infers an answer_image for answer-less records)
            assert np.allclose(a.answer, b.answer, atol=5e-5) and b.answer_image == a.answer_image
        assert [Image.open(p).size for p in b.images] == [Image.open(p).size for p in a.images]


def test_workers_give_the_same_split(tmp_path):
    base = ["data.synth.tasks=[" + ",".join(sorted(TASK_GENERATORS)) + "]", "data.synth.n_eval=6"]
    serial = generate_split(compose_cfg(base).data.synth, 0, "eval", tmp_path / "serial")
    parallel = generate_split(compose_cfg([*base, "data.synth.workers=2"]).data.synth, 0, "eval", tmp_path / "par")
    assert len(serial) == 6 * len(TASK_GENERATORS) > 64  # enough jobs for the worker pool
    strip = lambda s: {k: v for k, v in s.to_dict().items() if k != "images"}  # noqa: E731
    assert [strip(s) for s in serial] == [strip(s) for s in parallel]
    assert all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
               for s, p in zip(serial[::7], parallel[::7]) for a, b in zip(s.images, p.images))


@pytest.mark.parametrize("override, key", [
    ("+data.synth.task_images.diff=[2,3]", "task_images.diff"),
    ("+data.synth.task_images.common_object=[3,9]", "task_images.common_object"),
    ("data.synth.max_images=7", "max_images"),
    ("data.synth.hard_negatives=1.5", "hard_negatives"),
    ("data.synth.queries_per_image=0", "queries_per_image"),
])
def test_bad_synth_config_fails_naming_the_key(override, key, tmp_path):
    cfg = compose_cfg(["data.synth.tasks=[diff]", "data.synth.n_eval=1", override]).data.synth
    with pytest.raises(ConfigError, match=re.escape(key)):
        generate_split(cfg, 0, "eval", tmp_path)


def test_preview_writes_a_contact_sheet(tmp_path):
    from mig_data.synth.preview import main

    (out,) = main(["task=view_diff", "n=3", "scale=2", f"out={tmp_path / 'sheet.png'}", "image_size=96"])
    sheet = Image.open(out)
    assert sheet.width >= 2 * 96 * 2 and sheet.height > 3 * 96 * 2
    with pytest.raises(ConfigError, match="unknown task"):
        main(["task=nope", f"out={tmp_path / 'x.png'}"])
    with pytest.raises(ConfigError, match="data.synth override"):
        main(["task=diff", "no_such_key=1", f"out={tmp_path / 'x.png'}"])
