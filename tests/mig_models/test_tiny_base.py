"""The tiny base model (`model=tiny_base`): the committed weights load with the real transformers
classes and ground held-out single images with distractors; the recipe that builds them
(`experiment=tiny_base`, and the same on the tiny Qwen2.5-VL) runs end to end."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf
from transformers import (
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)

from mig_data.synth.generate import generate_split
from mig_eval.evaluate import evaluate_samples
from mig_eval.query_swap import swap_stats, swapped
from mig_lab.config import ConfigError
from mig_lab.runner import run
from mig_models.builders import build_model, resolve_model_path
from tests.conftest import REPO, compose_cfg

BASES = [
    ("tiny_base", "qwen2_vl", Qwen2VLForConditionalGeneration, Qwen2VLProcessor),
]
MIN_ACC = 0.25  # recipe.json: 0.29 on the 256 held-out samples, 0.34 on these 32; a random-init model scores 0
N_CHECK = 32  # held-out samples scored here (recipe.json records the accuracy on exactly these)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """The first N_CHECK samples of the recipe's held-out split (single_grounding, 2-4 objects per
    image): sample i depends only on (seed, split, task, i), so these are the recipe's own."""
    cfg = compose_cfg(["experiment=tiny_base"])
    synth = OmegaConf.merge(cfg.data, cfg.stages.data_eval.overrides.data).synth
    synth.n_eval, synth.workers = N_CHECK, 0
    out = tmp_path_factory.mktemp("tiny_base_heldout")
    return generate_split(synth, cfg.seed, "eval", out)


def test_pkg_paths_resolve_inside_the_package_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = resolve_model_path("pkg://mig_models/assets/tiny_base")
    assert folder == REPO / "mig_models" / "assets" / "tiny_base"
    assert resolve_model_path("/abs/folder").as_posix() == "/abs/folder"
    with pytest.raises(ConfigError, match="not an installed package"):
        resolve_model_path("pkg://no_such_package_xyz/weights")


@pytest.mark.parametrize("name, family, model_cls, processor_cls", BASES)
def test_committed_base_loads_and_grounds_heldout_single_images(heldout, tmp_path, name, family, model_cls,
                                                                processor_cls):
    cfg = compose_cfg([f"model={name}"])
    folder = resolve_model_path(cfg.model.path)
    recipe = json.loads((folder / "recipe.json").read_text())
    assert (folder / "model.safetensors").stat().st_size <= 25 * 2**20
    assert recipe["family"] == family == cfg.model.family

    model, processor = build_model(cfg.model, seed=0)
    assert type(model) is model_cls and isinstance(processor, processor_cls)
    assert "Tokenizer" in type(processor.tokenizer).__name__ and processor.image_processor.size.longest_edge == 112 * 112

    preds = evaluate_samples(model, processor, family, heldout, cfg.eval, tmp_path / "predictions.jsonl")
    assert all(p["well_formed"] for p in preds)
    acc = sum(p["iou"] >= 0.5 for p in preds) / len(preds)
    recorded = recipe["check"]["acc@0.5"]
    assert recipe["check"]["n"] == N_CHECK
    # the same samples, greedy decoding: only floating-point differences between machines move this
    assert abs(acc - recorded) <= 0.1, (acc, recorded)
    assert acc >= MIN_ACC, f"{name} no longer grounds held-out single images: Acc@0.5 {acc:.2f} on {N_CHECK}"


SWAP_GOAL = 0.85  # issue 16: the box follows the query in >= 85% of same-image query pairs


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 16 open: the committed base does not read the query yet "
                                       "(README 'The tiny base model': query-swap frontier)")
def test_committed_base_box_follows_the_query(tmp_path_factory, tmp_path):
    """128 held-out images, each asked about its target and about another uniquely named object; both boxes
    must land on the object their query names."""
    cfg = compose_cfg(["experiment=tiny_base", "model=tiny_base"])
    synth = OmegaConf.merge(cfg.data, cfg.stages.data_eval.overrides.data).synth
    synth.n_eval, synth.workers = 128, 0
    samples = generate_split(synth, cfg.seed, "eval", tmp_path_factory.mktemp("swap"))
    pairs = [(s, t) for s, t in ((s, swapped(s)) for s in samples) if t is not None]
    model, processor = build_model(cfg.model, seed=0)
    preds = evaluate_samples(model, processor, "qwen2_vl", [x for p in pairs for x in p], cfg.eval,
                             tmp_path / "predictions.jsonl")
    stats = swap_stats(preds[0::2], preds[1::2], no_swap=len(samples) - len(pairs))
    assert stats["pairs"] >= 100
    assert stats["follows"] >= SWAP_GOAL, json.dumps(stats)


def test_qwen2_5_vl_experiment_is_tiny_base_with_the_other_family():
    base = compose_cfg(["experiment=tiny_base"])
    q25 = compose_cfg(["experiment=tiny_base_qwen2_5_vl"])
    assert base.model.family == "qwen2_vl" and q25.model.family == "qwen2_5_vl"
    assert base.model.path is None and q25.model.path is None  # both train from random init
    assert OmegaConf.to_container(base.stages) == OmegaConf.to_container(q25.stages)
    # no multi-image grounding in training: only single_grounding (and short answers) reach an sft stage
    for name, spec in base.stages.items():
        if spec.kind == "sft":
            data_stage = base.stages[spec.inputs.data]
            data = OmegaConf.merge(base.data, data_stage.overrides.get("data", {}))
            tasks = set(data.synth.tasks) if data.source == "synth" else {
                t for src in data.mixture.sources.values() for t in src.tasks}
            assert tasks <= {"single_grounding", "understanding"}, (name, tasks)


@pytest.mark.parametrize("experiment", ["tiny_base", "tiny_base_qwen2_5_vl"])
def test_recipe_runs_end_to_end(tmp_path, experiment):
    os.environ.setdefault("WANDB_MODE", "offline")
    results = run(compose_cfg([f"experiment={experiment}", "debug=tiny", "logger=csv"], tmp_path))
    sft_stages = [r for r in results.values() if r.kind == "sft"]
    assert len(sft_stages) >= 2  # the curriculum: each phase starts from the previous one's model
    final = results["sft"]
    assert (final.dir / "model" / "model.safetensors").exists()
    done = json.loads((final.dir / "done.json").read_text())
    assert set(done["inputs"]) == {"data", "model"}
    single = json.loads((results["eval_single"].dir / "metrics.json").read_text())
    assert set(single["tasks"]) == {"single_grounding"}
    mig = json.loads((results["eval_mig"].dir / "metrics.json").read_text())
    assert len(mig["tasks"]) == 10 and "single_grounding" not in mig["tasks"]
    assert (tmp_path / "run" / "table.md").exists()
    swap = results["swap_single"]  # the query-swap test on the held-out images: every sample counted
    assert swap.summary["pairs"] + swap.summary["no_swap"] == single["overall"]["n"]
    assert (swap.dir / "predictions.jsonl").read_text().count("-swap") == swap.summary["pairs"]
