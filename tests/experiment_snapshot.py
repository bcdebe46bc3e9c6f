"""The experiment snapshot: what every experiment plans, committed so a refactor can prove it changed nothing.

For each experiment (at full size and at `debug=tiny`): the composed config (as `--cfg job` prints it, paths
and the stage list left out) and every planned stage with its kind, inputs and cache key. A cache key hashes
everything the stage reads, so equal keys mean equal work and equal numbers.

    make snapshot      # rewrite tests/snapshots/experiments.json on purpose, then review the diff
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from tests.conftest import REPO, compose_cfg

SNAPSHOT = REPO / "tests" / "snapshots" / "experiments.json"


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


def snapshot_of(name: str, debug: str, tmp: Path) -> dict:
    from mig_lab.graph import plan

    cfg = compose_cfg([f"experiment={name}", f"debug={debug}"], tmp)
    stages = plan(cfg)
    job = OmegaConf.to_container(cfg, resolve=True)
    for key in ("paths", "stages"):
        job.pop(key, None)
    return {
        "config": job,
        "stages": [{"name": p.name, "kind": p.kind.name, "inputs": dict(sorted(p.inputs.items())), "key": p.key}
                   for p in stages],
    }


def build() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return {f"{name}/{debug}": snapshot_of(name, debug, Path(tmp))
                for name in experiment_names() for debug in ("none", "tiny")}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.experiment_snapshot --write   (rewrites the committed snapshot)")
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
