"""Model + processor builders: the tiny model from config, or real weights from a local folder.

Both paths return the real transformers classes (Qwen2-VL or Qwen2.5-VL), so every later stage
runs the same code on the tiny default and on Qwen2-VL-7B.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import (
    AutoProcessor,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from mig_lab.config import ConfigError
from mig_models.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

MODEL_CLASSES = {
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def mrope_section(head_dim: int) -> list[int]:
    """Split of the rotary half-dimension over (time, height, width), in Qwen2-VL's 1:1.5:1.5 ratio."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_model_config(family: str, arch: DictConfig, tokenizer: Any):
    """A real Qwen2-VL / Qwen2.5-VL config at tiny size, with the tokenizer's special-token ids."""
    ids = tokenizer.convert_tokens_to_ids
    head_dim = arch.hidden_size // arch.num_heads
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta,
                         "mrope_section": mrope_section(head_dim)},
        bos_token_id=None,
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=arch.tie_word_embeddings,
    )
    common = dict(
        text_config=text,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=arch.tie_word_embeddings,
    )
    if family == "qwen2_vl":
        vision = dict(depth=arch.vision_depth, embed_dim=arch.vision_embed_dim, hidden_size=arch.hidden_size,
                      num_heads=arch.vision_num_heads, mlp_ratio=arch.vision_mlp_ratio, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(vision_config=vision, **common)
    vision = dict(depth=arch.vision_depth, hidden_size=arch.vision_embed_dim,
                  intermediate_size=arch.vision_embed_dim * arch.vision_mlp_ratio,
                  num_heads=arch.vision_num_heads, out_hidden_size=arch.hidden_size, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[arch.vision_depth - 1])
    return Qwen2_5_VLConfig(vision_config=vision, **common)


def build_processor(family: str, tokenizer: Any, min_pixels: int, max_pixels: int) -> ProcessorMixin:
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels,
                                            patch_size=14, merge_size=2, temporal_patch_size=2)
    cls = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
               chat_template=tokenizer.chat_template)


def build_tiny(cfg: DictConfig, seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The tiny model: real classes, random init seeded by `seed`, offline tokenizer."""
    m = cfg
    tokenizer = build_tokenizer(m.tokenizer)
    processor = build_processor(m.family, tokenizer, m.min_pixels, m.max_pixels)
    config = tiny_model_config(m.family, m.arch, tokenizer)
    config._attn_implementation = m.attn_implementation
    fork_devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = MODEL_CLASSES[m.family](config)
    model.to(_DTYPES[m.dtype])
    _set_generation_ids(model, tokenizer)
    return model, processor


PKG_SCHEME = "pkg://"


def resolve_model_path(path: str | Path) -> Path:
    """A model folder on disk. `pkg://<package>/<sub/path>` names a folder inside an installed package
    (the committed tiny base weights: `pkg://mig_models/assets/tiny_base`), so a config that points at
    them works from any working directory and from an installed copy of the project."""
    text = str(path)
    if not text.startswith(PKG_SCHEME):
        return Path(text).expanduser()
    package, _, sub = text[len(PKG_SCHEME):].partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model.path={text!r}: {package!r} is not an installed package "
                          f"(expected pkg://<package>/<folder>, e.g. pkg://mig_models/assets/tiny_base)")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def load_pretrained(path: str | Path, cfg: DictConfig) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Real (or saved tiny) weights from a local Hugging Face folder; never a hub download."""
    path = resolve_model_path(path)
    _check_folder(path, cfg)
    processor = AutoProcessor.from_pretrained(path, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    processor.tokenizer.padding_side = "left"
    model = MODEL_CLASSES[cfg.family].from_pretrained(path, dtype=_DTYPES[cfg.dtype],
                                                      attn_implementation=cfg.attn_implementation)
    _set_generation_ids(model, processor.tokenizer)
    return model, processor


def _check_folder(path: Path, cfg: DictConfig) -> None:
    if not (path / "config.json").exists():
        raise ConfigError(
            f"model.path={str(path)!r} is not a local Hugging Face model folder (no config.json there). "
            f"Download the weights on a machine with hub access and set model.path=/abs/path/to/{cfg.name}, "
            f"e.g. python run.py experiment=<name> model={cfg.name} model.path=/data/Qwen2-VL-7B-Instruct"
        )


def build_model(model_cfg: DictConfig, seed: int, path: str | Path | None = None
                ) -> tuple[PreTrainedModel, ProcessorMixin]:
    """`path` (a stage's saved model) wins over `model.path`; neither means the tiny model."""
    source = path or model_cfg.path
    if source:
        return load_pretrained(source, model_cfg)
    _check_model_config_source(model_cfg)
    return build_tiny(model_cfg, seed)


def _check_model_config_source(model_cfg: DictConfig) -> None:
    if model_cfg.path:
        _check_folder(resolve_model_path(model_cfg.path), model_cfg)
    elif model_cfg.pretrained:
        raise ConfigError(
            f"model={model_cfg.name} loads real weights from a local folder, and model.path is not set. "
            f"Download them on a machine with hub access, then run with model.path=/abs/path/to/the/folder "
            f"(the folder holding config.json and *.safetensors)"
        )


def check_model_source(cfg: DictConfig, inputs: dict[str, str]) -> None:
    """Planning: a stage without a `model` input loads `model.path` (or builds the tiny model): it must exist."""
    if "model" not in inputs:
        _check_model_config_source(cfg.model)


def _set_generation_ids(model: PreTrainedModel, tokenizer: Any) -> None:
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None


def save_model(model: PreTrainedModel, processor: ProcessorMixin, out_dir: Path) -> None:
    """Save weights (safetensors), config, tokenizer and processor as one loadable folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
