"""Every experiment plans exactly what the committed snapshot says (config and every stage's cache key).

A change to any experiment, recipe, default or stage kind's `reads` shows up here; when it is meant,
regenerate with `make snapshot` and review the diff of tests/snapshots/experiments.json."""

from __future__ import annotations

import json

import pytest

from tests.experiment_snapshot import SNAPSHOT, experiment_names, snapshot_of

COMMITTED = json.loads(SNAPSHOT.read_text())


def test_snapshot_covers_every_experiment():
    assert sorted({k.split("/")[0] for k in COMMITTED}) == experiment_names(), "run `make snapshot`"


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_plans_as_snapshot(name, tmp_path):
    for debug in ("none", "tiny"):
        now, then = snapshot_of(name, debug, tmp_path), COMMITTED[f"{name}/{debug}"]
        assert now["config"] == then["config"], f"{name} debug={debug}: composed config changed"
        assert now["stages"] == then["stages"], f"{name} debug={debug}: planned stages or keys changed"
