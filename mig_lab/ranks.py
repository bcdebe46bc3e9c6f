"""The ranks of one job: rank 0 plans and keeps the records; every rank runs the loops it is sent.

How a job's ranks start (the command is otherwise the same):

- `python run.py ... fabric.devices=N`: the job's own process is rank 0 and starts N-1 workers
  (`python -m mig_lab.ranks`). Nothing re-runs `run.py`, so nothing re-composes, re-plans or
  re-sweeps (the Hydra + Fabric relaunch trap: Lightning #11617, Hydra #2070).
- `torchrun --nproc_per_node=N run.py ...`, and SLURM (`srun`, one task per GPU, or the submitit
  launcher): the launcher starts every rank. Rank 0 runs Hydra and plans; the others call `serve()`
  before Hydra (run.py), so they make no run folder of their own.

Rank 0 sends each stage that needs every rank (training, evaluation, sampling) over a gloo control
group; the other ranks run that stage's function and wait for the next. Cache decisions, locks,
`done.json` and the run's records stay on rank 0. Loops reach the other ranks through Fabric and
the two helpers at the bottom (`gather_objects`, `mean_over_ranks`).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as dist

log = logging.getLogger("mig_lab")

WORKER_ENV = "MIG_LAB_LOCAL_WORKER"  # set in the workers `start()` launches itself
# A worker waits for rank 0 while it plans, makes data or holds a lock another job of a sweep is using.
CONTROL_TIMEOUT = timedelta(hours=24)


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    workers: list[subprocess.Popen] = field(default_factory=list)  # the ones this process started
    env_before: dict[str, Optional[str]] = field(default_factory=dict)  # variables to restore when the job ends
    threads: int = 0  # torch's thread count before the job (restored at the end)

    @property
    def distributed(self) -> bool:
        return self.world > 1


_CONTROL: Optional[dist.ProcessGroup] = None
_CLEAN_EXIT = {"ok": True}  # rank 0 of an external launch: say goodbye at exit only after clean jobs


# ------------------------------------------------------------------------------- who started us
def external_launch() -> Optional[dict[str, int]]:
    """Rank, world size, devices per node and nodes when a launcher (torchrun, SLURM, `start()`)
    started this process; None for a plain `python run.py`."""
    env = os.environ
    if env.get(WORKER_ENV) or ("TORCHELASTIC_RUN_ID" in env and "LOCAL_WORLD_SIZE" in env):
        world, local = int(env["WORLD_SIZE"]), int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
        return {"rank": int(env["RANK"]), "world": world, "devices": local, "nodes": max(1, world // local)}
    # srun (or submitit, through srun) started the tasks of a step: one rank per task
    if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in env:
        world, nodes = int(env["SLURM_STEP_NUM_TASKS"]), int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES", "1")))
        return {"rank": int(env["SLURM_PROCID"]), "world": world, "devices": world // nodes, "nodes": nodes}
    return None


def is_external_worker() -> bool:
    """True in a rank > 0 that a launcher started: it serves rank 0 instead of running Hydra."""
    launch = external_launch()
    return launch is not None and launch["rank"] > 0


# ---------------------------------------------------------------------------- process groups
def _backend() -> str:
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _init_process_group(rank: int, world: int) -> None:
    """The default group (gloo on CPU, gloo + NCCL with GPUs) and the gloo control group."""
    global _CONTROL
    if not dist.is_initialized():
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if "MASTER_ADDR" not in os.environ and "SLURM_NTASKS" in os.environ:  # srun sets no rendezvous
            slurm = SLURMEnvironment()
            os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = slurm.main_address, str(slurm.main_port)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0))))
        dist.init_process_group(_backend(), rank=rank, world_size=world)
    if _CONTROL is None:
        _CONTROL = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)


def _cpu_threads(world_on_node: int, threads: int = 0) -> None:
    """Ranks on one CPU share its threads: `run.threads` split over them when pinned (> 0); unpinned,
    the cores (torchrun sets OMP_NUM_THREADS=1, which is then kept)."""
    if torch.cuda.is_available():
        return
    if threads > 0:
        torch.set_num_threads(max(1, threads // world_on_node))
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_on_node))


def pin_threads(threads: int, world_on_node: int) -> int:
    """Rank 0 of a job: pin `run.threads` (see `_cpu_threads`); returns the thread count to restore."""
    before = torch.get_num_threads()
    if threads > (os.cpu_count() or 1):
        log.warning("run.threads=%d but this machine has %d cores: the numbers are the same, the run slower",
                    threads, os.cpu_count())
    _cpu_threads(world_on_node, threads)
    return before


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(devices: int, nodes: int) -> Ranks:
    """Rank 0's side of a job with `devices` x `nodes` ranks: join (or start) them."""
    world = devices * nodes
    if world == 1:
        return Ranks()
    launch = external_launch()
    if launch is not None:  # torchrun / SLURM started every rank
        _init_process_group(launch["rank"], launch["world"])
        _cpu_threads(launch["devices"])
        if "registered" not in _CLEAN_EXIT:
            atexit.register(_say_goodbye)
            _CLEAN_EXIT["registered"] = True
        _CLEAN_EXIT["ok"] = True
        return Ranks(rank=launch["rank"], world=launch["world"])
    if nodes > 1:
        from mig_lab.config import ConfigError

        raise ConfigError(f"fabric.num_nodes={nodes}: start the ranks of several nodes with torchrun or SLURM "
                          f"(README 'On a cluster'); `python run.py` starts ranks on this node only")
    port = _free_port()
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
              "LOCAL_WORLD_SIZE": str(world), "NODE_RANK": "0", "GROUP_RANK": "0"}
    workers = []
    for r in range(1, world):
        env = {**os.environ, **common, "RANK": str(r), "LOCAL_RANK": str(r), WORKER_ENV: "1"}
        workers.append(subprocess.Popen([sys.executable, "-m", "mig_lab.ranks"], env=env))
    # rank 0 takes the same variables, so Fabric sees processes that were started for it
    mine = {**common, "RANK": "0", "LOCAL_RANK": "0"}
    before = {k: os.environ.get(k) for k in mine}
    os.environ.update(mine)
    ranks = Ranks(rank=0, world=world, workers=workers, env_before=before, threads=torch.get_num_threads())
    try:
        _init_process_group(0, world)
    except BaseException:
        finish(ranks, ok=False)
        raise
    _cpu_threads(world)
    log.info("started %d worker ranks (pids %s) on 127.0.0.1:%d", world - 1, [w.pid for w in workers], port)
    return ranks


def send(ranks: Ranks, message: Any) -> None:
    """Rank 0: hand a message (a stage to run, or the end of the job) to every other rank."""
    if ranks.distributed:
        dist.broadcast_object_list([message], src=0, group=_CONTROL)


def _receive() -> Any:
    box = [None]
    dist.broadcast_object_list(box, src=0, group=_CONTROL)
    return box[0]


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier(group=_CONTROL)


def finish(ranks: Ranks, ok: bool = True) -> None:
    """Rank 0 at the end of a job: release the ranks it started (and its process group)."""
    global _CONTROL
    if not ranks.distributed:
        return
    if not ranks.workers:  # external launch: the ranks stay for the next job of a sweep
        _CLEAN_EXIT["ok"] = ok
        return
    if ok:
        send(ranks, ("exit",))
        for w in ranks.workers:
            w.wait(timeout=120)
    for w in ranks.workers:
        if w.poll() is None:
            w.kill()
            w.wait()
    failed = [(w.pid, w.returncode) for w in ranks.workers if w.returncode not in (0, None)]
    if dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL = None
    for k, v in ranks.env_before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if ranks.threads:
        torch.set_num_threads(ranks.threads)
    if ok and failed:
        raise RuntimeError(f"worker ranks exited with errors (pid, code): {failed}; see their output above")


def worker_failures(ranks: Ranks) -> str:
    """A line naming the workers that have exited with an error (to add to rank 0's error)."""
    dead = [(i + 1, w.returncode) for i, w in enumerate(ranks.workers) if w.poll() not in (None, 0)]
    return "; ".join(f"rank {r} exited with code {c}" for r, c in dead)


def _say_goodbye() -> None:
    if _CONTROL is not None and _CLEAN_EXIT["ok"] and dist.get_rank() == 0:
        send(Ranks(world=dist.get_world_size()), ("exit",))


# ------------------------------------------------------------------------------------- workers
def serve() -> None:
    """A rank > 0: run every stage rank 0 sends, until it says the job (or the process) is over."""
    from mig_lab import setup_env
    from mig_lab.registry import stage_kinds

    setup_env()
    launch = external_launch()
    logging.basicConfig(level=logging.INFO, format=f"[rank {launch['rank']}] %(levelname)s %(name)s: %(message)s")
    _init_process_group(launch["rank"], launch["world"])
    _cpu_threads(launch["devices"])
    kinds = stage_kinds()
    while True:
        message = _receive()
        if message[0] == "exit":
            break
        _, kind, ctx = message
        _cpu_threads(launch["devices"], ctx.cfg.run.threads)
        try:
            kinds[kind].fn(ctx)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)  # closes this rank's connections, so rank 0 fails instead of waiting
        dist.barrier(group=_CONTROL)
    dist.destroy_process_group()


# -------------------------------------------------------------------------- loop collectives
def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (just `[obj]` in a one-process run)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_CONTROL)
    return out


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each number over ranks (keys every rank has)."""
    gathered = gather_objects(values)
    return {k: sum(g[k] for g in gathered) / len(gathered) for k in values}


if __name__ == "__main__":  # the module proper, not this `__main__` copy, holds the control group
    from mig_lab import ranks

    ranks.serve()
