"""What `run.py` does with a composed config: validate, record, run the stages, summarise."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from mig_lab.config import validate
from mig_lab.records import atomic_write_json, run_record
from mig_lab.stages import StageResult, plan, run_stages

log = logging.getLogger("mig_lab")


def run(cfg: DictConfig) -> dict[str, StageResult]:
    validate(cfg)
    plan(cfg)  # fail on a bad stage graph or override before anything runs
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "run.json", run_record(cfg, experiment=cfg.name))
    results = run_stages(cfg, run_dir)
    lines = [f"{'stage':<18} {'kind':<14} {'status':<8} {'seconds':>8}  output"]
    for name, r in results.items():
        status = "cached" if r.cached else "ran"
        lines.append(f"{name:<18} {r.kind:<14} {status:<8} {r.seconds:>8.1f}  {r.dir}")
    log.info("experiment %s finished; run folder %s\n%s", cfg.name, run_dir, "\n".join(lines))
    return results
