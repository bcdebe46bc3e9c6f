"""What `run.py` does with a composed config: validate, plan, start the ranks, run the stages, summarise.

Only rank 0 gets here with a job (a rank > 0 started by torchrun or SLURM serves instead, see
`mig_lab.ranks`): it plans, takes the locks and writes `run.json`, `stages.json` and every `done.json`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from mig_lab import ranks as rank_control
from mig_lab.config import ConfigError, validate
from mig_lab.fabric import check_hardware, resolve_devices
from mig_lab.graph import StageResult, plan, run_stages
from mig_lab.records import atomic_write_json, run_record

log = logging.getLogger("mig_lab")


def resolve_world(cfg: DictConfig) -> tuple[int, int]:
    """(devices per node, nodes), written back into `cfg.fabric` as numbers. Under torchrun or SLURM the
    launcher decides; a conflicting `fabric.devices` / `fabric.num_nodes` is an error, not a guess."""
    f = cfg.fabric
    devices, nodes = resolve_devices(f.devices, f.accelerator), int(f.num_nodes)
    launch = rank_control.external_launch()
    if launch is not None:
        if str(f.devices) not in ("1", "auto") and devices != launch["devices"]:
            raise ConfigError(f"config key 'fabric.devices' is {f.devices} but the launcher started "
                              f"{launch['devices']} processes per node; leave it out (or make them agree)")
        if nodes not in (1, launch["nodes"]):
            raise ConfigError(f"config key 'fabric.num_nodes' is {nodes} but the launcher started "
                              f"{launch['nodes']} node(s)")
        devices, nodes = launch["devices"], launch["nodes"]
    f.devices, f.num_nodes = str(devices), nodes
    return devices, nodes


def run(cfg: DictConfig) -> dict[str, StageResult]:
    if rank_control.is_external_worker():  # a SLURM task of a submitit job: serve rank 0
        rank_control.serve()
        return {}
    validate(cfg)
    devices, nodes = resolve_world(cfg)
    check_hardware(cfg.fabric)
    plan(cfg)  # fail on a bad stage graph, name or override before anything runs or starts
    ranks = rank_control.start(devices, nodes)
    threads_before = rank_control.pin_threads(cfg.run.threads, devices)
    try:
        run_dir = Path(cfg.paths.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "run.json", run_record(cfg, experiment=cfg.name, world_size=ranks.world,
                                                             torch_threads=torch.get_num_threads()))
        results = run_stages(cfg, run_dir, ranks=ranks)
    except BaseException as e:
        failures = rank_control.worker_failures(ranks)
        rank_control.finish(ranks, ok=False)
        torch.set_num_threads(threads_before)
        if failures:
            raise RuntimeError(f"{e} ({failures}; their traceback is printed above)") from e
        raise
    rank_control.finish(ranks)
    torch.set_num_threads(threads_before)
    lines = [f"{'stage':<18} {'kind':<14} {'status':<8} {'seconds':>8}  output"]
    for name, r in results.items():
        status = "cached" if r.cached else "ran"
        lines.append(f"{name:<18} {r.kind:<14} {status:<8} {r.seconds:>8.1f}  {r.dir}")
    log.info("experiment %s finished on %d rank(s); run folder %s\n%s", cfg.name, ranks.world, run_dir,
             "\n".join(lines))
    return results
