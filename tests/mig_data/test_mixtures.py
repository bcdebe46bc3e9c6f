"""Weighted mixtures: largest-remainder counts, reproducible by seed, tagged by source, and the
Migician Table 12 reference configs."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mig_data.loading import load_split
from mig_data.mixtures import build_mixture, largest_remainder, mixture_counts
from mig_lab.config import ConfigError
from mig_lab.graph import run_stages
from tests.conftest import compose_cfg
from tests.mig_data.data_files import write_sharegpt_dataset

TABLE_12 = {
    "migician_stage1": {"s_understanding": 0.17, "s_grounding": 0.13, "m_understanding": 0.16,
                        "m_grounding_stage1": 0.54},
    "migician_stage2": {"s_understanding": 0.09, "s_grounding": 0.07, "m_understanding": 0.08,
                        "m_grounding_stage1": 0.27, "m_grounding_stage2": 0.49},
}
STAGE1_MIG_TASKS = ["common_object", "object_tracking", "refer_grounding", "group_grounding", "region", "diff"]


@given(st.lists(st.floats(0.01, 100), min_size=1, max_size=8), st.integers(0, 5000))
def test_largest_remainder_sums_exactly_and_stays_within_one_of_each_share(weights, total):
    counts = largest_remainder(weights, total)
    assert sum(counts) == total
    for w, c in zip(weights, counts):
        assert abs(c - total * w / sum(weights)) < 1


def test_largest_remainder_gives_leftovers_to_the_largest_remainders_then_the_first_listed():
    assert largest_remainder([0.17, 0.13, 0.16, 0.54], 12) == [2, 2, 2, 6]  # exact 2.04 1.56 1.92 6.48
    assert largest_remainder([1, 1, 1], 4) == [2, 1, 1]
    assert largest_remainder([1, 1, 1], 5) == [2, 2, 1]


def _cfg(tmp_path, *overrides):
    return compose_cfg(["logger=csv", "+stages={data: {kind: make_data}}", *overrides], tmp_path)


def _mix(tmp_path, *overrides, sources: str | None = None):
    sources = sources or ("{grounding: {ratio: 0.25, tasks: [single_grounding]},"
                          " multi: {ratio: 0.75, tasks: [group_grounding]}}")
    return _cfg(tmp_path, "data.source=mixture", f"+data.mixture.sources={sources}", *overrides)


@pytest.mark.parametrize("name", sorted(TABLE_12))
def test_reference_configs_carry_table_12(name):
    cfg = compose_cfg([f"data={name}"])
    m = cfg.data.mixture
    assert cfg.data.source == "mixture"
    assert {k: v.ratio for k, v in m.sources.items()} == TABLE_12[name]
    assert sum(TABLE_12[name].values()) == pytest.approx(1.0)
    assert list(m.sources.m_grounding_stage1.tasks) == STAGE1_MIG_TASKS
    assert list(m.sources.s_understanding.n_images) == [1, 1] and m.sources.m_understanding.n_images[0] == 2
    counts = mixture_counts(m, m.n_train)
    assert counts == {k: round(v * m.n_train) for k, v in TABLE_12[name].items()}  # exact at these sizes
    assert m.n_train == (5000 if name == "migician_stage1" else 1000)  # the paper's 1M : 200k


@pytest.mark.parametrize("name", sorted(TABLE_12))
def test_reference_mixtures_run_or_name_the_generators_they_still_lack(tmp_path, name):
    from mig_data.synth.tasks import TASK_GENERATORS

    cfg = _cfg(tmp_path, f"data={name}", "debug=tiny")
    needed = {t for src in TABLE_12[name] for t in cfg.data.mixture.sources[src].tasks}
    missing = sorted(needed - set(TASK_GENERATORS))
    if missing:  # free_form (stage 2) arrives with its generator
        with pytest.raises(ConfigError) as err:
            run_stages(cfg, tmp_path / "run")
        assert "MIG-Synth has no generator for these tasks" in str(err.value)
        assert all(repr(t) in str(err.value) for t in missing)
    else:
        res = run_stages(cfg, tmp_path / "run")["data"]
        expected = dict(zip(TABLE_12[name], largest_remainder(list(TABLE_12[name].values()), cfg.debug.n_train)))
        assert res.summary["train"]["sources"] == expected
        train = load_split(res.dir, "train")
        assert Counter(s.meta["source"] for s in train) == expected
        assert {len(s.images) for s in train if s.meta["source"] == "s_understanding"} <= {1}
        assert min(len(s.images) for s in train if s.meta["source"] == "m_understanding") >= 2


def test_missing_generator_fails_before_any_sample_is_made(tmp_path):
    cfg = _mix(tmp_path, "data.mixture.n_train=20",
               sources="{ok: {ratio: 0.5, tasks: [group_grounding]}, later: {ratio: 0.5, tasks: [no_generator_yet]}}")
    with pytest.raises(ConfigError) as err:
        run_stages(cfg, tmp_path / "run")
    assert "data.mixture.sources.later.tasks names ['no_generator_yet']: MIG-Synth has no generator" in str(err.value)
    assert not list((tmp_path / "cache").glob("make_data-*/images"))


def test_mixture_composition_matches_the_ratios_and_is_shuffled(tmp_path):
    cfg = _mix(tmp_path, "data.mixture.n_train=20", "data.mixture.n_eval=5")
    res = run_stages(cfg, tmp_path / "run")["data"]
    train = load_split(res.dir, "train")
    assert Counter(s.meta["source"] for s in train) == {"grounding": 5, "multi": 15}
    assert res.summary["train"]["sources"] == {"grounding": 5, "multi": 15}
    assert all((s.task == "single_grounding") == (s.meta["source"] == "grounding") for s in train)
    order = [s.meta["source"] for s in train]
    assert order != sorted(order) and order != sorted(order, reverse=True)
    evals = load_split(res.dir, "eval")
    assert Counter(s.meta["source"] for s in evals) == {"grounding": 1, "multi": 4}  # 1.25 / 3.75
    assert not {s.id for s in evals} & {s.id for s in train}


def test_mixture_is_reproducible_by_seed(tmp_path):
    ids = {}
    for seed in (0, 0, 1):
        cfg = _mix(tmp_path / f"s{seed}-{len(ids)}", "data.mixture.n_train=12", f"seed={seed}")
        samples, _ = build_mixture(cfg.data, seed, "train", tmp_path / f"out{seed}-{len(ids)}")
        ids[len(ids)] = [(s.id, s.question, tuple(s.answer)) for s in samples]
    assert ids[0] == ids[1]
    assert ids[0] != ids[2]


def test_sources_with_the_same_task_draw_different_samples(tmp_path):
    cfg = _mix(tmp_path, "data.mixture.n_train=8",
               sources="{a: {ratio: 1, tasks: [group_grounding]}, b: {ratio: 1, tasks: [group_grounding]}}")
    samples, info = build_mixture(cfg.data, 0, "train", tmp_path / "out")
    by = {src: {s.question + str(s.answer) for s in samples if s.meta["source"] == src} for src in "ab"}
    assert info["sources"] == {"a": 4, "b": 4} and not by["a"] & by["b"]


def test_a_source_replayed_in_another_mixture_draws_the_same_samples(tmp_path):
    stage1 = _mix(tmp_path, "data.mixture.n_train=8", sources="{m: {ratio: 1, tasks: [group_grounding]}}")
    stage2 = _mix(tmp_path, "data.mixture.n_train=8",
                  sources="{m: {ratio: 0.5, tasks: [group_grounding]}, new: {ratio: 0.5, tasks: [single_grounding]}}")
    first, _ = build_mixture(stage1.data, 0, "train", tmp_path / "one")
    second, _ = build_mixture(stage2.data, 0, "train", tmp_path / "two")
    replayed = {(s.id, s.question, tuple(s.answer)) for s in second if s.meta["source"] == "m"}
    assert len(replayed) == 4 and replayed <= {(s.id, s.question, tuple(s.answer)) for s in first}


def test_per_source_synth_overrides_apply_and_typos_fail(tmp_path):
    cfg = _mix(tmp_path, "data.mixture.n_train=6",
               sources="{two: {ratio: 1, tasks: [group_grounding], synth: {min_images: 2, max_images: 2}},"
                       " four: {ratio: 1, tasks: [group_grounding], synth: {min_images: 4, max_images: 4}}}")
    samples, _ = build_mixture(cfg.data, 0, "train", tmp_path / "out")
    assert {(s.meta["source"], len(s.images)) for s in samples} == {("two", 2), ("four", 4)}
    typo = _mix(tmp_path, "data.mixture.n_train=6",
                sources="{x: {ratio: 1, tasks: [group_grounding], synth: {max_imgs: 2}}}")
    with pytest.raises(ConfigError, match="data.mixture.sources.x.synth: .*max_imgs"):
        build_mixture(typo.data, 0, "train", tmp_path / "out2")


def test_image_count_filter_keeps_the_first_fitting_samples_and_deletes_the_rest(tmp_path):
    sources = "{three: {ratio: 1, tasks: [group_grounding], n_images: [3, 3]}}"
    cfg = _mix(tmp_path, "data.mixture.n_train=6", "data.synth.min_images=2", "data.synth.max_images=4",
               sources=sources)
    out = tmp_path / "out"
    samples, _ = build_mixture(cfg.data, 0, "train", out)
    assert len(samples) == 6 and {len(s.images) for s in samples} == {3}
    on_disk = {str(p) for p in out.rglob("*.png")}
    assert on_disk == {p for s in samples for p in s.images}  # rejected samples leave no images behind
    again, _ = build_mixture(_mix(tmp_path, "data.mixture.n_train=3", sources=sources).data, 0, "train",
                             tmp_path / "out2")
    first3 = sorted(s.id for s in samples)[:3]
    assert sorted(s.id for s in again) == first3  # the first fitting indices, whatever the count
    impossible = _mix(tmp_path, "data.mixture.n_train=2", sources="{x: {ratio: 1, tasks: [single_grounding], "
                                                                  "n_images: [2, 2]}}")
    with pytest.raises(ConfigError, match=r"sources\.x\.n_images=\[2, 2\]: MIG-Synth task 'single_grounding' made 0"):
        build_mixture(impossible.data, 0, "train", tmp_path / "out3")


def test_file_sources_mix_with_synth_and_upsample_by_repetition(tmp_path, synth_data, caplog):
    mg = write_sharegpt_dataset(tmp_path / "mg")  # 4 records
    cfg = _mix(tmp_path, "data.mixture.n_train=20",
               sources=f"{{bench: {{ratio: 0.5, source: mig_bench, file: {synth_data / 'train.json'}}},"
                       f" mg: {{ratio: 0.4, source: sharegpt, file: {mg}, default_task: understanding}},"
                       f" synth: {{ratio: 0.1, tasks: [single_grounding]}}}}")
    res = run_stages(cfg, tmp_path / "run")["data"]
    train = load_split(res.dir, "train")
    assert Counter(s.meta["source"] for s in train) == {"bench": 10, "mg": 8, "synth": 2}
    bench_ids = [s.id for s in train if s.meta["source"] == "bench"]
    assert len(set(bench_ids)) == 10  # 10 of 16 records: drawn without replacement
    mg_ids = Counter(s.id for s in train if s.meta["source"] == "mg")
    assert mg_ids == {"mt-1": 2, "st-ordinal": 2, "st-task": 2, "text-only": 2}  # 8 of 4 records: each twice
    assert {s.task for s in train if s.meta["source"] == "mg" and s.id != "st-task"} == {"understanding"}
    assert any("each used 2 time(s)" in r.getMessage() for r in caplog.records)
    # the stage key covers the files a mixture names
    records = json.loads(mg.read_text())
    mg.write_text(json.dumps(records[:3]))
    assert run_stages(cfg, tmp_path / "run")["data"].dir != res.dir


def test_mixture_config_errors_name_the_key(tmp_path):
    cases = {
        "{a: {ratio: 0, tasks: [group_grounding]}}": "data.mixture.sources.a.ratio must be > 0",
        "{a: {ratio: 1}}": "data.mixture.sources.a.tasks: a synth source needs at least one",
        "{a: {ratio: 1, source: sharegpt}}": "data.mixture.sources.a.file: a sharegpt source needs a file",
        "{a: {ratio: 1, source: parquet, file: x}}": "data.mixture.sources.a.source is 'parquet'",
    }
    for sources, expected in cases.items():
        cfg = _mix(tmp_path, "data.mixture.n_train=4", sources=sources)
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
            build_mixture(cfg.data, 0, "train", tmp_path / "out")
    with pytest.raises(ConfigError, match="n_train / n_eval must be >= 0 and not both 0"):
        build_mixture(_mix(tmp_path).data, 0, "train", tmp_path / "out")
