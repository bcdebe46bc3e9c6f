"""What a stage kind is, and what its function receives: the one import a new stage kind needs.

A stage kind is declared once, beside the code it runs, with `@stage_kind(...)`; the one table of all
kinds is `mig_lab/registry.py`. Each stage writes one output folder; its cache key hashes the config
keys the kind `reads` plus its inputs' keys (mig_lab/graph.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig

from mig_lab.config import ConfigError

# Keys that change how a stage runs but never what it writes: left out of every cache key.
EXECUTION_ONLY = (
    "data.synth.workers",  # sample i depends only on (seed, split, task, i)
    "data.verify_images",  # how hard make_data looks at image files, not what it writes
    # how generation is batched and how a vLLM engine shares the GPU: each completion has its own seed
    "generation.batch_size", "generation.vllm.gpu_memory_utilization", "generation.vllm.sleep",
    "generation.vllm.enforce_eager",
)


@dataclass(frozen=True)
class StageKind:
    name: str
    fn: Callable[[StageContext], Optional[dict]]
    reads: tuple[str, ...]  # dotted config keys that determine the output
    version: int = 1  # bump when the code changes what the stage writes
    cache: bool = True  # False: cheap stages (reports) that run every time, into the run folder
    fingerprint: Optional[Callable[[DictConfig], Any]] = None  # extra key input (external file identity)
    ignores: tuple[str, ...] = ()  # dotted keys under `reads` that change how, not what (+ EXECUTION_ONLY)
    ranks: str = "zero"  # zero: rank 0 alone runs it | all: every rank runs it (loops on Fabric)
    needs: tuple[str, ...] = ()  # input roles every stage of this kind must have (checked at planning)
    batch: Optional[str] = None  # config section whose global batch splits over the ranks ("train" | "rl")
    trains: bool = False  # updates weights (fp32 master weights are checked at planning)
    # plan-time checks of the stage's config, given its input roles (each raises ConfigError naming the key)
    checks: tuple[Callable[[DictConfig, dict[str, str]], None], ...] = ()

    def __call__(self, ctx: StageContext) -> Optional[dict]:
        return self.fn(ctx)


def stage_kind(name: str, reads: tuple[str, ...] | list[str], **options) -> Callable[..., StageKind]:
    """Declare a stage kind: `@stage_kind("sft", reads=("seed", "model", "train"), ranks="all")` above its
    function; the decorated name is then the `StageKind` that `mig_lab/registry.py` lists."""
    if options.get("ranks", "zero") not in ("zero", "all"):
        raise ValueError(f"stage kind {name!r}: ranks must be 'zero' or 'all'")

    def declare(fn: Callable[[StageContext], Optional[dict]]) -> StageKind:
        return StageKind(name=name, fn=fn, reads=tuple(reads), **options)

    return declare


@dataclass
class StageResult:
    name: str
    kind: str
    key: str
    dir: Path
    summary: dict = field(default_factory=dict)
    cached: bool = False
    seconds: float = 0.0


@dataclass
class StageContext:
    name: str
    kind: str
    key: str
    cfg: DictConfig  # the run config with this stage's overrides and the debug caps applied
    inputs: dict[str, StageResult]
    out_dir: Path
    run_dir: Path
    group: str  # the experiment name: loggers group a run's stages under it

    def input(self, role: str) -> StageResult:
        if role not in self.inputs:
            raise ConfigError(
                f"stage '{self.name}' ({self.kind}) needs an input named '{role}'; "
                f"its inputs are {sorted(self.inputs)}"
            )
        return self.inputs[role]


def model_dir(result: StageResult) -> Path:
    """Where a model-producing stage (sft, merge, grpo) leaves its loadable Hugging Face folder."""
    path = Path(result.dir) / "model"
    if not (path / "config.json").exists():
        raise ConfigError(f"stage '{result.name}' ({result.kind}) has no model folder at {path}")
    return path
