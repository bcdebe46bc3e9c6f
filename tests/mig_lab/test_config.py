"""Config composition: every experiment composes and plans; typos fail naming the key."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from mig_lab.config import ConfigError, validate
from mig_lab.graph import plan
from tests.conftest import REPO, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


def test_experiments_folder_is_the_experiment_group():
    assert (REPO / "conf" / "experiment").resolve() == (REPO / "experiments").resolve()
    assert "smoke" in EXPERIMENTS


def header_command(name: str) -> list[str]:
    """The overrides of the `# Command:` line an experiment file starts with (after `python run.py`)."""
    lines = (REPO / "experiments" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_" and lines[1].startswith("# Command:"), f"{name}: header"
    assert any(line.startswith("# Reproduces:") for line in lines[:12]), f"{name}: no '# Reproduces:' line"
    make = re.match(r"# Command:\s+make (\S+)", lines[1])
    if make:  # the make target must run the experiment
        target = re.search(rf"^{make.group(1)}:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.M)
        assert target and f"run.py experiment={name}" in target.group(1), f"make {make.group(1)}"
    found = re.search(r"python run\.py((?: [^\s(]+=[^\s)]+)+)", lines[1])
    assert found, f"{name}: the Command line has no `python run.py ...`"
    return found.group(1).split()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_header_command_composes_and_plans(name, tmp_path):
    """The command an experiment's header gives is the one that runs it: it composes, plans with distinct
    stage keys (also debug-sized), and its report names a transcribed paper table (or none)."""
    from mig_eval.tables import list_tables

    overrides = header_command(name)
    assert overrides[0] == f"experiment={name}"
    for debug in ("none", "tiny"):
        cfg = compose_cfg([*overrides, f"debug={debug}"], tmp_path)
        validate(cfg)
        stages = plan(cfg)
        assert stages and len({p.key for p in stages}) == len(stages)
        assert cfg.report.get("table") in (None, *list_tables()), cfg.report.get("table")


def test_run_py_prints_the_config_the_tests_compose():
    """`python run.py experiment=<name> --cfg job` (what a user inspects) is the config the runner plans."""
    for name in ("smoke", "coldstart_table10", "migician_table6"):
        out = subprocess.run([sys.executable, "run.py", f"experiment={name}", "--cfg", "job"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        printed = OmegaConf.to_container(OmegaConf.create(out.stdout))
        composed = OmegaConf.to_container(compose_cfg([f"experiment={name}"]))
        for cfg in (printed, composed):
            cfg.pop("paths")  # the run folder: Hydra's, at run time
        assert printed == composed, name


def test_unknown_key_on_command_line_names_it():
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg(["train.lrr=0.1"])
    assert "lrr" in str(e.value.__cause__ or e.value)


def test_unknown_key_in_stage_override_names_it(tmp_path):
    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    cfg.stages.sft.overrides = {"train": {"max_stepz": 5}}
    with pytest.raises(ConfigError, match=r"stages\.sft\.overrides.*max_stepz"):
        plan(cfg)


def test_wrong_type_fails():
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg(["train.max_steps=lots"])
    assert isinstance(e.value.__cause__, (ValidationError, ConfigKeyError))
    assert "max_steps" in str(e.value.__cause__)


def test_bad_choice_names_key():
    cfg = compose_cfg(["train.mode=qlora"])
    with pytest.raises(ConfigError, match=r"'train\.mode' is 'qlora'"):
        validate(cfg)


def test_bad_thread_count_and_difference_pairs_are_named_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"'run\.threads' is -1"):
        validate(compose_cfg(["run.threads=-1"]))
    cfg = compose_cfg(["experiment=smoke", "+report.differences=[[base, nope]]"], tmp_path)
    with pytest.raises(ConfigError, match=r"stage 'table'.*report\.differences.*\['base', 'sft'\]"):
        plan(cfg)
    plan(compose_cfg(["experiment=smoke", "+report.differences=[[sft, base]]"], tmp_path))  # roles it has: fine


def test_typed_float_stays_float():
    cfg = compose_cfg(["rl.kl_beta=0"])
    assert isinstance(cfg.rl.kl_beta, float) and cfg.rl.kl_beta == 0.0


def test_debug_tiny_caps_every_stage(tmp_path):
    full = {p.name: p for p in plan(compose_cfg(["experiment=smoke"], tmp_path))}
    tiny = {p.name: p for p in plan(compose_cfg(["experiment=smoke", "debug=tiny"], tmp_path))}
    assert full["sft"].cfg.train.max_steps == 300
    assert tiny["sft"].cfg.train.max_steps <= 3
    assert tiny["data"].cfg.data.synth.n_train <= 12
    assert full["sft"].key != tiny["sft"].key


def test_stage_key_depends_only_on_what_the_stage_reads(tmp_path):
    a = {p.name: p.key for p in plan(compose_cfg(["experiment=smoke"], tmp_path))}
    b = {p.name: p.key for p in plan(compose_cfg(["experiment=smoke", "eval.max_new_tokens=40"], tmp_path))}
    c = {p.name: p.key for p in plan(compose_cfg(["experiment=smoke", "train.lr=0.002"], tmp_path))}
    assert a["data"] == b["data"] and a["sft"] == b["sft"] and a["eval_sft"] != b["eval_sft"]
    assert a["data"] == c["data"] and a["eval_base"] == c["eval_base"]
    assert a["sft"] != c["sft"] and a["eval_sft"] != c["eval_sft"]  # the change flows downstream


def test_stage_input_must_be_an_earlier_stage(tmp_path):
    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    cfg.stages.eval_base.inputs = {"data": "nope"}
    with pytest.raises(ConfigError, match="'nope', which is not an earlier stage"):
        plan(cfg)


def test_missing_model_path_explains_how_to_set_it():
    from mig_models.builders import build_model

    cfg = compose_cfg(["model=qwen2_vl_7b"])
    with pytest.raises(ConfigError, match=r"model\.path="):
        build_model(cfg.model, seed=0)
    cfg = compose_cfg(["model=qwen2_vl_7b", "model.path=/nonexistent/Qwen2-VL-7B"])
    with pytest.raises(ConfigError, match="not a local Hugging Face model folder"):
        build_model(cfg.model, seed=0)


def test_a_for_each_group_writes_one_stage_set_per_row_with_typed_values(tmp_path):
    cfg = compose_cfg(["experiment=coldstart_table10"], tmp_path)
    names = [p.name for p in plan(cfg)]
    assert names[4:8] == ["grpo_nokl", "eval_nokl", "grpo_b1e-1", "eval_b1e-1"]  # rows in order, group order kept
    betas = {p.name: p.cfg.rl.kl_beta for p in plan(cfg) if p.kind.name == "grpo"}
    assert betas["grpo_nokl"] == 0.0 and betas["grpo_b1e-3"] == 1e-3 and isinstance(betas["grpo_b1e-5"], float)


def test_a_for_each_group_with_lists_of_different_lengths_names_the_group(tmp_path):
    cfg = compose_cfg(["experiment=coldstart_table10"], tmp_path)
    cfg.stages.per_beta.for_each.beta = [0.0]
    with pytest.raises(ConfigError, match=r"stages\.per_beta\.for_each.*one length"):
        plan(cfg)


def test_a_stage_without_a_required_input_fails_at_planning(tmp_path):
    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    cfg.stages.sft.inputs = {}
    with pytest.raises(ConfigError, match=r"stages\.sft \(sft\) needs inputs \['data'\]"):
        plan(cfg)


@pytest.mark.parametrize("overrides, message", [
    (["+rl.rewards.nope=1.0"], r"stage 'grpo_full'.*'rl\.rewards' names unknown reward\(s\) \['nope'\]; known: \["),
    (["cot.teacher.kind=oracel"], r"stage 'cot_data'.*'cot\.teacher\.kind' is 'oracel'; expected one of"),
    (["cot.teacher.kind=model"], r"stage 'cot_data'.*needs cot\.teacher\.model_path"),
    (["cot.teacher.kind=model", "cot.teacher.model_path=/nonexistent/teacher"],
     r"'cot\.teacher\.model_path' is '/nonexistent/teacher': not a local Hugging Face model folder"),
    (["model.path=/nonexistent/Qwen2-VL-7B"], r"stage 'sft_lora'.*not a local Hugging Face model folder"),
])
def test_names_and_paths_fail_when_the_experiment_is_planned(overrides, message, tmp_path):
    """Every name and path the stages will use is checked before any stage runs, naming the key."""
    cfg = compose_cfg(["experiment=coldstart_rl_full", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=message):
        plan(cfg)


def test_a_missing_data_file_fails_at_planning_naming_the_key(tmp_path):
    cfg = compose_cfg(["experiment=eval_migbench", "data=mig_bench", "data.eval_file=/nonexistent/bench.json"],
                      tmp_path)
    with pytest.raises(ConfigError, match=r"'data\.eval_file' is '/nonexistent/bench\.json', which is not a file"):
        plan(cfg)


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", r"'train\.lr' is -1\.0; expected a value in \(0, inf\]"),
    ("train.max_steps=-5", r"'train\.max_steps' is -5; expected a value in \[0, inf\]"),
    ("train.batch_size=0", r"'train\.batch_size' is 0; expected a value in \[1, inf\]"),
    ("rl.kl_beta=-0.1", r"'rl\.kl_beta' is -0\.1"),
    ("rl.top_p=1.5", r"'rl\.top_p' is 1\.5; expected a value in \(0, 1\]"),
    ("rl.temperature=0", r"'rl\.temperature' is 0\.0"),
    ("data.synth.hard_negatives=2", r"'data\.synth\.hard_negatives' is 2\.0; expected a value in \[0, 1\]"),
    ("cot.rl_fraction=1", r"'cot\.rl_fraction' is 1\.0; expected a value in \[0, 1\)"),
])
def test_out_of_range_values_fail_when_the_experiment_is_planned(tmp_path, override, message):
    cfg = compose_cfg(["experiment=coldstart_rl_full", override], tmp_path)
    with pytest.raises(ConfigError, match=message):
        plan(cfg)
