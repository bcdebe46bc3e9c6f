"""Migician (migician.txt Sec. 4.3, Tables 1, 5, 6, 7, 9, 10): the two scales, the stage graph shared by
the table experiments, the warmup ratio of the 7B recipe, the table-row stages, and debug-sized runs of
the pipeline (stage 1 -> stage 2 -> merge -> evaluate) and of every table experiment."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mig_data.loading import load_split
from mig_data.mixtures import mixture_counts
from mig_eval.table_rows import combine_evals_stage, random_guess_stage
from mig_lab.boxes import iou
from mig_lab.config import ConfigError, validate
from mig_lab.graph import StageContext, StageResult, plan
from mig_lab.runner import run
from mig_models.merging import load_folder_state
from mig_rl.schedule import warmup_cosine_factor
from mig_rl.sft import total_steps, warmup_steps
from tests.conftest import REPO, compose_cfg

TEN_TASKS = ["diff", "view_diff", "common_object", "object_tracking", "multi_view", "region", "refer_grounding",
             "group_grounding", "reasoning", "correspondence"]
DEBUG = ["debug=tiny", "debug.n_eval=1", "logger=csv", "fabric=cpu"]
BASE = "tiny_base"  # the model every row starts from (row labels name it)


def planned(experiment: str, *overrides: str) -> dict:
    return {p.name: p for p in plan(compose_cfg([f"experiment={experiment}", *overrides]))}


# ------------------------------------------------------------------------------------ the scales
def test_scale_7b_is_the_papers_recipe_and_tiny_keeps_its_shape(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # planning checks that model.path is a model folder
    with pytest.raises(ConfigError, match=r"model=qwen2_vl_7b loads real weights .* model\.path is not set"):
        planned("migician", "recipe=migician_7b")
    big = planned("migician", "recipe=migician_7b", f"model.path={tmp_path}")
    s1, s2 = big["stage1"].cfg, big["stage2"].cfg
    assert s1.model.name == "qwen2_vl_7b" and s1.fabric.strategy == "fsdp" and s1.model.dtype == "float32" and s1.fabric.precision == "bf16-mixed"
    assert (s1.train.lr, s2.train.lr) == (5e-6, 4e-6)
    assert (s1.train.warmup_ratio, s2.train.warmup_ratio) == (0.015, 0.05)
    assert s1.train.freeze_vision and not s2.train.freeze_vision
    for t in (s1.train, s2.train):  # one epoch, cosine to 0, global batch 48 on 8 GPUs
        assert t.mode == "full" and t.max_steps <= 0 and t.epochs == 1 and t.min_lr_ratio == 0
        assert t.batch_size == 48 and t.micro_batch_size == 2
    tiny = planned("migician")
    t1, t2 = tiny["stage1"].cfg, tiny["stage2"].cfg
    assert t1.model.name == "tiny_base" and t1.model.path
    assert t2.train.lr / t1.train.lr == pytest.approx(4e-6 / 5e-6)
    assert (t1.train.warmup_ratio, t2.train.warmup_ratio) == (0.015, 0.05)
    assert t1.train.freeze_vision and not t2.train.freeze_vision and t1.train.max_steps <= 0
    # the data and the evaluation are the same at both scales
    for name in ("data", "data_stage1", "data_stage2"):
        assert big[name].key == tiny[name].key


def test_pipeline_wiring_mixtures_and_merge():
    p = planned("migician")
    assert p["stage1"].inputs == {"data": "data_stage1"}
    assert p["stage2"].inputs == {"data": "data_stage2", "model": "stage1"}
    assert p["migician"].kind.name == "merge" and p["migician"].inputs == {"stage1": "stage1", "stage2": "stage2"}
    assert p["migician"].cfg.merge.method == "average" and list(p["migician"].cfg.merge.weights) == [0.5, 0.5]
    assert p["eval_migician"].inputs == {"data": "data", "model": "migician"}
    assert list(p["data"].cfg.data.synth.tasks) == TEN_TASKS and p["data"].cfg.data.synth.n_train == 0
    assert {k: v.ratio for k, v in p["data_stage1"].cfg.data.mixture.sources.items()} == \
        {k: v.ratio for k, v in compose_cfg(["data=migician_stage1"]).data.mixture.sources.items()}
    assert "m_grounding_stage2" in p["data_stage2"].cfg.data.mixture.sources


@pytest.mark.parametrize("table", ["migician_table1", "migician_table6", "migician_table10"])
def test_table_experiments_reuse_the_pipeline_stages(table):
    method, other = planned("migician"), planned(table)
    for name in ("data", "data_stage1", "data_stage2", "stage1", "stage2", "migician", "eval_migician"):
        assert other[name].key == method[name].key, name


def test_rows_shared_between_tables_are_computed_once():
    t1 = planned("migician_table1")
    for table, names in {"migician_table5": ("eval_base", "eval_base_cot"), "migician_table9": ("eval_base",),
                         "migician_table10": ("eval_base",),
                         "migician_table7": tuple(n for n in t1 if n != "table")}.items():
        other = planned(table)
        for name in names:
            assert other[name].key == t1[name].key, (table, name)


def test_table6_ablations_remove_sources_and_keep_the_rest_of_the_data():
    p = planned("migician_table6")
    for stage in ("stage1", "stage2"):
        full = p[f"data_{stage}"].cfg.data.mixture
        full_counts = mixture_counts(full, full.n_train)
        for ablation, removed in (("wo_grounding", {"m_grounding_stage1", "m_grounding_stage2"}),
                                  ("wo_general", {"m_understanding"})):
            m = p[f"data_{stage}_{ablation}"].cfg.data.mixture
            assert set(m.sources) == set(full.sources) - removed
            # the kept sources have the same counts as in the full mixture (so the same samples)
            assert mixture_counts(m, m.n_train) == {k: v for k, v in full_counts.items() if k not in removed}
            assert {k: v.ratio for k, v in m.sources.items()} == {k: full.sources[k].ratio for k in m.sources}
        assert p[f"{stage}_wo_grounding"].cfg.train == p[stage].cfg.train


def test_table9_trains_each_task_on_the_multi_task_samples():
    p = planned("migician_table9")
    mt = p["data_multi_task"].cfg.data.synth
    assert sorted(mt.tasks) == sorted(["refer_grounding", "object_tracking", "group_grounding", "region", "diff",
                                       "common_object"])
    for task in mt.tasks:
        alone = p[f"data_{task}"].cfg.data.synth
        assert list(alone.tasks) == [task] and alone.n_train == mt.n_train  # same (seed, split, task, index)
        assert list(p[f"eval_{task}"].cfg.eval.tasks) == [task]
    assert set(p["merging"].inputs.values()) == {f"sft_{t}" for t in mt.tasks}
    assert set(p["separate"].inputs.values()) == {f"eval_{t}" for t in mt.tasks}


# ---------------------------------------------------------------------------------- warmup ratio
def test_warmup_ratio_sets_the_warmup_from_the_run_length():
    cfg = compose_cfg(["train=migician_7b_stage1"])
    steps = total_steps(cfg.train, n_samples=1_000_000)
    assert steps == math.ceil(1_000_000 / 48)  # one epoch at global batch 48, whatever the number of ranks
    assert warmup_steps(cfg.train, steps) == math.ceil(0.015 * steps)
    factors = [warmup_cosine_factor(s, warmup_steps(cfg.train, steps), steps, cfg.train.min_lr_ratio)
               for s in range(steps)]
    assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == warmup_steps(cfg.train, steps) - 1
    assert factors[-1] < 1e-6  # cosine to 0
    no_ratio = compose_cfg(["train.warmup_steps=7"])
    assert warmup_steps(no_ratio.train, 100) == 7
    with pytest.raises(ConfigError, match="warmup_ratio"):
        validate(compose_cfg(["train.warmup_ratio=1.5"]))


# ------------------------------------------------------------------------------ table-row stages
def _ctx(tmp_path, cfg, inputs: dict) -> StageContext:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return StageContext(name="row", kind="row", key="k", cfg=cfg, inputs=inputs, out_dir=out, run_dir=tmp_path,
                        group="test")


def test_random_guess_answers_the_whole_image_for_every_sample(synth_data, tmp_path):
    cfg = compose_cfg([])
    summary = random_guess_stage(_ctx(tmp_path, cfg, {"data": StageResult("d", "make_data", "k", synth_data)}))
    samples = load_split(synth_data, "eval")
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    whole = [0.0, 0.0, 0.999, 0.999]
    assert [p["iou"] for p in preds] == pytest.approx([iou(s.answer, whole) for s in samples])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected = sum(iou(s.answer, whole) >= 0.5 for s in samples) / len(samples)
    assert metrics["tasks"]["group_grounding"]["acc@0.5"] == pytest.approx(expected)
    assert summary["overall"]["n"] == len(samples) and metrics["eval"]["response"] == "<|box_start|>(0,0),(999,999)<|box_end|>"


def _eval_dir(path: Path, preds: list[dict]) -> StageResult:
    path.mkdir(parents=True)
    (path / "predictions.jsonl").write_text("".join(json.dumps({"index": i, **p}) + "\n" for i, p in enumerate(preds)))
    return StageResult(path.name, "evaluate", "k", path)


def test_combine_evals_pools_per_task_evaluations_into_one_row(tmp_path):
    a = _eval_dir(tmp_path / "a", [{"task": "diff", "iou": 0.9, "well_formed": True},
                                   {"task": "diff", "iou": 0.2, "well_formed": True}])
    b = _eval_dir(tmp_path / "b", [{"task": "region", "iou": 0.6, "well_formed": False}])
    combine_evals_stage(_ctx(tmp_path, compose_cfg([]), {"diff": a, "region": b}))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["tasks"]["diff"]["acc@0.5"] == 0.5 and metrics["tasks"]["region"]["acc@0.5"] == 1.0
    assert metrics["overall"]["acc@0.5"] == pytest.approx(0.75)  # the mean over tasks, as the papers average
    c = _eval_dir(tmp_path / "c", [{"task": "diff", "iou": 0.0}])
    with pytest.raises(ConfigError, match="both score task 'diff'"):
        combine_evals_stage(_ctx(tmp_path, compose_cfg([]), {"diff": a, "again": c}))


# ------------------------------------------------------------------------------ debug-sized runs
def table_md(results) -> str:
    return (Path(results["table"].dir).parent / "table.md").read_text()


def our_rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| **") and any(cells[1:]):  # bold and not a section title: one of ours
            rows[cells[0].strip("*")] = [c.strip("*") for c in cells[1:]]
    return rows


def test_migician_pipeline_runs_two_stages_then_merges(tmp_path):
    results = run(compose_cfg(["experiment=migician", *DEBUG], tmp_path))
    assert not any(r.cached for r in results.values())
    # stage 2 starts from the stage-1 model, on the stage-2 mixture with free-form conversations
    done = json.loads((results["stage2"].dir / "done.json").read_text())
    assert done["inputs"] == {"data": str(results["data_stage2"].dir), "model": str(results["stage1"].dir)}
    train2 = load_split(results["data_stage2"].dir, "train")
    assert {s.meta["source"] for s in train2} == {"s_understanding", "s_grounding", "m_understanding",
                                                  "m_grounding_stage1", "m_grounding_stage2"}
    assert all(s.turns for s in train2 if s.task == "free_form")
    # the final model is the average of the two stages' weights
    s1, s2, merged = (load_folder_state(results[n].dir / "model") for n in ("stage1", "stage2", "migician"))
    for k in s1:
        assert torch.allclose(merged[k], (s1[k] + s2[k]) / 2, atol=1e-6), k
    assert any(not torch.equal(s1[k], s2[k]) for k in s1)  # stage 2 did train
    # evaluated on the ten tasks, printed under the paper's Migician row
    metrics = json.loads((results["eval_migician"].dir / "metrics.json").read_text())
    assert sorted(metrics["tasks"]) == sorted(TEN_TASKS)
    md = table_md(results)
    lines = md.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| Migician |"))
    assert lines[at + 1].startswith(f"| **Migician ({BASE})**")
    assert len(our_rows(md)[f"Migician ({BASE})"]) == 11  # ten tasks + AVE


@pytest.fixture(scope="module")
def table_cache(tmp_path_factory) -> Path:
    """One stage cache for every table experiment: their shared stages are computed once."""
    return tmp_path_factory.mktemp("migician_tables")


def run_table(name: str, cache: Path, tmp_path: Path):
    cfg = compose_cfg([f"experiment={name}", *DEBUG], tmp_path)
    cfg.paths.cache_dir = str(cache)
    return run(cfg)


@pytest.mark.slow
def test_table1_and_table7_and_table5(table_cache, tmp_path):
    r1 = run_table("migician_table1", table_cache, tmp_path / "t1")
    rows = our_rows(table_md(r1))
    assert set(rows) == {BASE, f"{BASE} +CoT", f"Migician ({BASE})"}
    cot = [json.loads(line) for line in (r1["eval_base_cot"].dir / "predictions.jsonl").read_text().splitlines()]
    assert all(p["cot"] == "single" and p["step2"]["images"] == [p["image"]] for p in cot)  # target image alone
    r7 = run_table("migician_table7", table_cache, tmp_path / "t7")
    assert all(r.cached for n, r in r7.items() if n != "table")  # every stage of Table 7 is Table 1's
    md7 = table_md(r7)
    assert "| Easy | Medium | Hard |" in md7 and f"Migician ({BASE})" in our_rows(md7)
    r5 = run_table("migician_table5", table_cache, tmp_path / "t5")
    assert r5["eval_base"].cached and r5["eval_base_cot"].cached and not r5["eval_base_mcot"].cached
    rows5 = our_rows(table_md(r5))
    assert set(rows5) == {BASE, f"{BASE} +mCoT", f"{BASE} +CoT"} and all(len(v) == 3 for v in rows5.values())


@pytest.mark.slow
def test_table10_answering_forms_and_random_guess(table_cache, tmp_path):
    r = run_table("migician_table10", table_cache, tmp_path / "t10")
    md = table_md(r)
    rows = our_rows(md)
    assert rows["random guess (0,0),(999,999)"][1:] == ["0.00"] * 4  # MIG-Synth objects are far smaller than the image
    assert rows[f"{BASE} (all+mCoT)"][0] == "All+mCoT" and rows[f"Migician ({BASE}, polling)"][0] == "Polling"
    all_preds = [json.loads(line) for line in (r["eval_migician_all"].dir / "predictions.jsonl").read_text().splitlines()]
    assert {p["task"] for p in all_preds} == {"common_object", "multi_view", "object_tracking", "region"}
    assert all("Image-" in p["prompt"] for p in all_preds)  # asked for every target at once


@pytest.mark.slow
def test_table6_data_ablation(table_cache, tmp_path):
    r = run_table("migician_table6", table_cache, tmp_path / "t6")
    rows = our_rows(table_md(r))
    assert set(rows) == {BASE, f"Full data ({BASE})", f"-w/o grounding ({BASE})", f"-w/o general ({BASE})"}
    for values in rows.values():  # only the MIG column exists on MIG-Synth
        assert values[:5] == ["-"] * 5 and values[5] != "-"
    sources = {s.meta["source"] for s in load_split(r["data_stage2_wo_grounding"].dir, "train")}
    assert not sources & {"m_grounding_stage1", "m_grounding_stage2"}


@pytest.mark.slow
def test_table9_multi_task_separate_and_merging(table_cache, tmp_path):
    r = run_table("migician_table9", table_cache, tmp_path / "t9")
    rows = our_rows(table_md(r))
    assert set(rows) == {BASE, f"Multi-Task Learning ({BASE})", f"Separate Learning ({BASE})",
                         f"Model Merging ({BASE})"}
    assert all(len(v) == 6 and "-" not in v for v in rows.values())
    combined = json.loads((r["separate"].dir / "metrics.json").read_text())
    for task, role in combined["eval"]["combined"].items():
        own = json.loads((r[f"eval_{task}"].dir / "metrics.json").read_text())
        assert combined["tasks"][task] == own["tasks"][task] and role == task
    merged = load_folder_state(r["merging"].dir / "model")
    parts = [load_folder_state(r[f"sft_{t}"].dir / "model") for t in combined["eval"]["combined"]]
    k = next(iter(merged))
    assert torch.allclose(merged[k], sum(p[k] for p in parts) / len(parts), atol=1e-6)


def test_every_migician_experiment_composes_at_both_scales(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    for path in sorted((REPO / "experiments").glob("migician*.yaml")):
        recipe = "migician_eval" if "override /recipe: migician_eval" in path.read_text() else "migician"
        for extra in ([], [f"recipe={recipe}_7b", f"model.path={tmp_path}"]):
            cfg = compose_cfg([f"experiment={path.stem}", *extra])
            planned = plan(cfg)
            assert planned and all(p.cfg.model.name == ("qwen2_vl_7b" if extra else "tiny_base") for p in planned)
            assert cfg.report.table == ("migician_table1" if path.stem == "migician" else path.stem)
