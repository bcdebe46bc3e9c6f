"""The stage graph: plan an experiment's stages (config, inputs, cache key each) and run them in order.

An experiment is a list of stages, each a function of its config and inputs.

Each stage writes one output folder in the cache, named `<kind>-<key>`, where the key hashes the
config sections the stage kind reads plus the keys of its inputs. Rows of a table or points of a
sweep that share a stage (the CoT-SFT model under every KL beta) therefore compute it once. A stage
is done only when `done.json` is written, last and atomically; a folder without it is unfinished
work that the next run picks up (training stages resume from their checkpoints there).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mig_lab.config import ConfigError, StageSpec, split_batch, validate
from mig_lab.fabric import check_fabric, resolve_devices, resolve_precision
from mig_lab.ranks import Ranks, barrier, send
from mig_lab.records import atomic_write_json, read_json, run_record, stable_hash
from mig_lab.registry import stage_kinds
from mig_lab.stage_kind import EXECUTION_ONLY, StageContext, StageKind, StageResult  # noqa: F401 (re-exported)

log = logging.getLogger("mig_lab")


@dataclass
class PlannedStage:
    name: str
    kind: StageKind
    cfg: DictConfig
    inputs: dict[str, str]  # role -> stage name
    key: str = ""


def apply_debug_caps(cfg: DictConfig) -> None:
    """`debug=tiny`: cap sizes so any experiment finishes in seconds (for tests)."""
    d = cfg.debug
    if not d.enabled:
        return
    cfg.train.max_steps = min(cfg.train.max_steps, d.max_steps) if cfg.train.max_steps > 0 else d.max_steps
    cfg.train.batch_size = min(cfg.train.batch_size, d.batch_size)
    cfg.train.micro_batch_size = None
    cfg.train.warmup_steps = min(cfg.train.warmup_steps, 1)
    cfg.train.ckpt_every = min(cfg.train.ckpt_every, d.max_steps)
    cfg.data.synth.n_train = min(cfg.data.synth.n_train, d.n_train)
    cfg.data.synth.n_eval = min(cfg.data.synth.n_eval, d.n_eval)
    cfg.data.mixture.n_train = min(cfg.data.mixture.n_train, d.n_train)
    cfg.data.mixture.n_eval = min(cfg.data.mixture.n_eval, d.n_eval)
    cfg.eval.max_samples = min(cfg.eval.max_samples or d.n_eval, d.n_eval)
    cfg.eval.max_new_tokens = min(cfg.eval.max_new_tokens, d.max_new_tokens)
    cfg.eval.batch_size = min(cfg.eval.batch_size, d.batch_size * 2)
    cfg.rl.max_steps = min(cfg.rl.max_steps, d.rl_steps)
    cfg.rl.num_generations = min(cfg.rl.num_generations, d.num_generations)
    cfg.rl.max_new_tokens = min(cfg.rl.max_new_tokens, d.max_new_tokens)
    cfg.rl.batch_size = min(cfg.rl.batch_size, d.batch_size)
    cfg.rl.micro_batch_size = None
    cfg.rl.ckpt_every = min(cfg.rl.ckpt_every, d.rl_steps)
    cfg.rl.rejection_k = min(cfg.rl.rejection_k, d.rejection_k)


def _stage_config(base: DictConfig, name: str, overrides: Any) -> DictConfig:
    try:
        # open: dict-typed fields (data.mixture.sources) take new keys; typed dataclass nodes still refuse typos
        with open_dict(base):
            merged = OmegaConf.merge(base, OmegaConf.create(OmegaConf.to_container(overrides)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"stages.{name}.overrides: {e}") from e
    OmegaConf.set_struct(merged, True)
    with open_dict(merged):
        merged.stages = {}
    apply_debug_caps(merged)
    merged.fabric.precision = resolve_precision(merged.fabric.precision, merged.fabric.accelerator)
    try:
        validate(merged)
    except ConfigError as e:
        raise ConfigError(f"stage '{name}': {e}") from e
    return merged


def _fill(value: Any, row: dict[str, Any]) -> Any:
    """`value` with every `{name}` of the row filled in (an exact "{name}" keeps the row value's type)."""
    if isinstance(value, dict):
        return {_fill(k, row): _fill(v, row) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, row) for v in value]
    if isinstance(value, str):
        for name, item in row.items():
            if value == "{" + name + "}":
                return item
            value = value.replace("{" + name + "}", str(item))
    return value


def expand_stages(stages: DictConfig) -> dict[str, Any]:
    """The experiment's stages in run order, every `for_each` group written out once per row."""
    out: dict[str, Any] = {}
    for name, spec in stages.items():
        if not spec.for_each:
            if not spec.kind:
                raise ConfigError(f"stages.{name} has no kind (and no for_each group)")
            out[name] = spec
            continue
        if not spec.stages or spec.kind:
            raise ConfigError(f"stages.{name}: a for_each group has `stages:` and no kind of its own")
        lists = {k: list(v) for k, v in OmegaConf.to_container(spec.for_each, resolve=True).items()}
        lengths = {len(v) for v in lists.values()}
        if len(lengths) != 1:
            raise ConfigError(f"stages.{name}.for_each: the lists must have one length (zipped), got "
                              f"{ {k: len(v) for k, v in lists.items()} }")
        group = OmegaConf.to_container(spec.stages, resolve=True)  # `${...}` reads the experiment's config
        for i in range(lengths.pop()):
            row = {k: v[i] for k, v in lists.items()}
            for stage_name, body in _fill(group, row).items():
                if stage_name in out:
                    raise ConfigError(f"stages.{name}.for_each makes a second stage named '{stage_name}'")
                out[stage_name] = OmegaConf.merge(OmegaConf.structured(StageSpec), body)
    return out


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def plan(cfg: DictConfig) -> list[PlannedStage]:
    """Validate the experiment's stages and compute each one's config and cache key, in run order."""
    kinds = stage_kinds()
    if not cfg.stages:
        raise ConfigError(
            f"experiment '{cfg.name}' has no stages; pick one with experiment=<name> "
            f"(the files in experiments/)"
        )
    base = cfg.copy()
    with open_dict(base):
        base.stages = {}
    planned: dict[str, PlannedStage] = {}
    for name, spec in expand_stages(cfg.stages).items():
        if spec.kind not in kinds:
            raise ConfigError(f"stages.{name}.kind is '{spec.kind}'; known kinds: {sorted(kinds)}")
        for role, src in spec.inputs.items():
            if src not in planned:
                raise ConfigError(
                    f"stages.{name}.inputs.{role} names '{src}', which is not an earlier stage "
                    f"(stages run in the order they are listed; earlier: {list(planned)})"
                )
        kind = kinds[spec.kind]
        missing = [role for role in kind.needs if role not in spec.inputs]
        if missing:
            raise ConfigError(f"stages.{name} ({spec.kind}) needs inputs {list(kind.needs)}; "
                              f"missing: {missing} (set stages.{name}.inputs.{missing[0]}=<an earlier stage>)")
        stage_cfg = _stage_config(base, name, spec.overrides)
        try:
            check_fabric(stage_cfg.fabric, spec.kind if kind.trains else None, stage_cfg.train.mode,
                         stage_cfg.model.dtype)
            world = resolve_devices(stage_cfg.fabric.devices, stage_cfg.fabric.accelerator) * stage_cfg.fabric.num_nodes
            if kind.batch is not None:  # the global batch splits over the ranks (the loops do the same split)
                section = stage_cfg[kind.batch]
                split_batch(section.batch_size, section.micro_batch_size, world, kind.batch)
            for check in kind.checks:
                check(stage_cfg, dict(spec.inputs))
        except ConfigError as e:
            raise ConfigError(f"stage '{name}': {e}") from e
        if (stage_cfg.fabric.devices, stage_cfg.fabric.num_nodes) != (cfg.fabric.devices, cfg.fabric.num_nodes):
            raise ConfigError(f"stages.{name}.overrides change fabric.devices/num_nodes; every stage of a job runs "
                              f"on the job's ranks ({cfg.fabric.devices} x {cfg.fabric.num_nodes})")
        planned[name] = PlannedStage(name=name, kind=kind, cfg=stage_cfg, inputs=dict(spec.inputs))
    for p in planned.values():
        view = {k: _select(p.cfg, k) for k in p.kind.reads}
        for dotted in (*EXECUTION_ONLY, *p.kind.ignores):
            for read, node in view.items():  # the `reads` entry it lies under ("data" or "data.synth")
                if not dotted.startswith(read + "."):
                    continue
                *path, last = dotted[len(read) + 1:].split(".")
                for part in path:
                    node = node.get(part) if isinstance(node, dict) else None
                if isinstance(node, dict):
                    node.pop(last, None)
        if p.kind.fingerprint is not None:
            view["_fingerprint"] = p.kind.fingerprint(p.cfg)
        p.key = stable_hash({"kind": p.kind.name, "version": p.kind.version, "config": view,
                             "inputs": {role: planned[src].key for role, src in sorted(p.inputs.items())}})
    return list(planned.values())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so two jobs of a sweep never compute the same stage at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_stages(cfg: DictConfig, run_dir: Path, only: Optional[list[str]] = None,
               ranks: Optional[Ranks] = None) -> dict[str, StageResult]:
    """Run (or reuse) every stage of the experiment; returns the results by stage name.

    Called on rank 0 only: it checks the cache, takes the locks and writes `done.json`; a stage whose kind
    runs on every rank is sent to the other ranks (`ranks`), and is done once all of them have finished."""
    ranks = ranks or Ranks()
    cache_dir = Path(cfg.paths.cache_dir).resolve()
    run_dir = Path(run_dir).resolve()
    results: dict[str, StageResult] = {}
    for p in plan(cfg):
        out_dir = cache_dir / f"{p.kind.name}-{p.key}" if p.kind.cache else run_dir / p.name
        done_file = out_dir / "done.json"
        inputs = {role: results[src] for role, src in p.inputs.items()}
        with _locked(cache_dir / ".locks" / f"{p.kind.name}-{p.key}.lock"):
            if p.kind.cache and done_file.exists():
                done = read_json(done_file)
                log.info("[stage %s] reusing cached %s (finished %s)", p.name, out_dir, done.get("time"))
                results[p.name] = StageResult(p.name, p.kind.name, p.key, out_dir,
                                              done.get("summary", {}), cached=True)
                continue
            if only is not None and p.name not in only:
                raise ConfigError(f"stage '{p.name}' is not cached and was not selected to run")
            resumed = out_dir.exists()
            out_dir.mkdir(parents=True, exist_ok=True)
            log.info("[stage %s] %s %s -> %s", p.name, "resuming" if resumed else "running", p.kind.name, out_dir)
            ctx = StageContext(name=p.name, kind=p.kind.name, key=p.key, cfg=p.cfg, inputs=inputs,
                               out_dir=out_dir, run_dir=run_dir, group=str(cfg.name))
            t0 = time.time()
            everyone = p.kind.ranks == "all" and ranks.distributed
            if everyone:  # the other ranks have no Hydra: they get the config with every interpolation resolved
                wire = ctx.cfg.copy()
                OmegaConf.resolve(wire)
                send(ranks, ("stage", p.kind.name, dataclasses.replace(ctx, cfg=wire)))
            summary = p.kind.fn(ctx) or {}
            if everyone:
                barrier(ranks)
            seconds = time.time() - t0
            atomic_write_json(done_file, run_record(p.cfg, stage=p.name, kind=p.kind.name, key=p.key,
                                                    inputs={r: str(s.dir) for r, s in inputs.items()},
                                                    seconds=round(seconds, 2), summary=summary))
            results[p.name] = StageResult(p.name, p.kind.name, p.key, out_dir, summary, seconds=seconds)
            log.info("[stage %s] done in %.1fs", p.name, seconds)
    atomic_write_json(run_dir / "stages.json", {
        name: {"kind": r.kind, "key": r.key, "dir": str(r.dir), "cached": r.cached,
               "seconds": round(r.seconds, 2), "summary": r.summary}
        for name, r in results.items()
    })
    return results
