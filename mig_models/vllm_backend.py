"""`generation.backend=vllm`: a vLLM engine colocated with training (GPUs; `pip install -e '.[vllm]'`).

The mechanism is TRL's "colocate" mode: each training process holds its own engine on its own GPU(s),
sharing the memory with training (`generation.vllm.gpu_memory_utilization`); with `generation.vllm.sleep`
the engine frees its weights and KV cache while the policy trains and wakes to generate. After each
optimizer step the policy's weights are copied into the engine (`sync_weights`): LoRA adapters are merged
into the base for the copy, so the engine always runs plain base weights. Several ranks start their engines
with vLLM's `external_launcher` executor (the ranks are Fabric's; vLLM starts no processes of its own);
`generation.vllm.tensor_parallel_size` > 1 splits one engine over that many GPUs.

Prompts are the chat-templated texts the HF path uses (the model's own template, one image placeholder per
image) with the PIL images as multi-modal data; every completion is its own request with its own seed, as
in the HF path (`mig_models.sampling` there, vLLM's per-request seeded sampler here).

Everything up to the engine call is plain functions, tested on CPU; vLLM is imported only when chosen.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from mig_models.builders import resolve_model_path
from mig_models.generation import Prompts, Sampling, decode_completions, stop_ids, vision_placeholder_ids
from mig_models.image_features import PromptImages

INSTALL_HINT = ("generation.backend=vllm needs the vllm package on a CUDA machine: pip install -e '.[vllm]' "
                "(in an environment without the CPU constraints file, since vLLM pins its own torch); "
                "or use generation.backend=hf")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> Any:
    """Import vllm, or fail with one error saying how to get it."""
    if not vllm_available():
        raise ImportError(INSTALL_HINT)
    import vllm

    return vllm


def engine_kwargs(vcfg: Any, model_dir: str, seed: int, world_size: int, rank: int, max_images: int,
                  dtype: str) -> dict[str, Any]:
    """Arguments of `vllm.LLM` for an engine colocated with rank `rank` of `world_size` training ranks."""
    kwargs = dict(model=model_dir, tokenizer=model_dir, dtype=dtype, seed=seed + rank // vcfg.tensor_parallel_size,
                  tensor_parallel_size=vcfg.tensor_parallel_size, gpu_memory_utilization=vcfg.gpu_memory_utilization,
                  max_model_len=vcfg.max_model_len, enable_sleep_mode=vcfg.sleep, enforce_eager=vcfg.enforce_eager,
                  limit_mm_per_prompt={"image": max_images, "video": 0})
    if world_size > 1 or vcfg.tensor_parallel_size > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"  # the ranks exist already: Fabric's
    return kwargs


def engine_requests(prompts: Prompts, n: int) -> list[dict[str, Any]]:
    """One request per completion, prompt-major: the chat-templated text and its images."""
    out = []
    for text, images in zip(prompts.texts, prompts.images):
        for _ in range(n):
            out.append({"prompt": text, "multi_modal_data": {"image": list(images)}} if images else {"prompt": text})
    return out


def sampling_kwargs(sampling: Sampling, seeds: Optional[list[int]], n_requests: int, stop: set[int],
                    suppress: list[int]) -> list[dict[str, Any]]:
    """Arguments of one `vllm.SamplingParams` per request: greedy or seeded sampling, stopping at end of turn,
    never emitting the vision placeholders (the HF path's `suppress_tokens`), special tokens kept in the text."""
    if sampling.do_sample and (seeds is None or len(seeds) != n_requests):
        raise ValueError(f"sampling needs one seed per completion ({n_requests}), got {None if seeds is None else len(seeds)}")
    common = dict(max_tokens=sampling.max_new_tokens, n=1, stop_token_ids=sorted(stop),
                  skip_special_tokens=False, logit_bias={t: -100.0 for t in suppress} or None)
    if not sampling.do_sample:
        return [dict(common, temperature=0.0) for _ in range(n_requests)]
    return [dict(common, temperature=sampling.temperature, top_p=sampling.top_p, top_k=-1, seed=s) for s in seeds]


def pad_completions(token_lists: list[list[int]], pad: int) -> torch.Tensor:
    """Completions of different lengths -> [N, C] right-padded ids."""
    width = max((len(t) for t in token_lists), default=0)
    return torch.tensor([list(t) + [pad] * (width - len(t)) for t in token_lists], dtype=torch.long).view(-1, width)


def synced_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the weights to copy into the engine, named as in the model's `save_pretrained` folder
    (what vLLM's `load_weights` reads). For a peft model call it under `merged_adapters(model)`: the base
    weights then hold the adapters; the adapter tensors and the copies `modules_to_save` replaced are left out."""
    module = getattr(model, "module", model)
    for name, tensor in module.state_dict().items():
        if "lora_" in name or ".original_module." in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        if hasattr(tensor, "full_tensor"):  # FSDP2 shard: every rank gathers the whole tensor (a collective)
            tensor = tensor.full_tensor()
        yield name, tensor.detach()


class merged_adapters:
    """`with merged_adapters(model):` LoRA merged into the base weights (peft), unmerged on exit."""

    def __init__(self, model: Any):
        self.module = getattr(model, "module", model)
        self.peft = hasattr(self.module, "merge_adapter")

    def __enter__(self) -> None:
        if self.peft:
            self.module.merge_adapter()

    def __exit__(self, *exc: Any) -> None:
        if self.peft:
            self.module.unmerge_adapter()


class VLLMBackend:
    """A colocated vLLM engine for this rank (see the module docstring). `training`: the engine sleeps between
    generations (its weights dropped) and `sync_weights` must run before each `generate`."""

    name = "vllm"

    def __init__(self, vcfg: Any, processor: Any, model_dir: Optional[str], model: Any = None, seed: int = 0,
                 max_images: int = 6, dtype: str = "bfloat16", rank: int = 0, world_size: int = 1,
                 training: bool = False):
        vllm = require_vllm()
        self.vcfg, self.processor, self.tokenizer = vcfg, processor, processor.tokenizer
        if model_dir is not None:
            model_dir = str(resolve_model_path(model_dir))
        if model_dir is None or not (Path(model_dir) / "tokenizer_config.json").exists():
            # a model built from config, or a folder without its tokenizer (the committed tiny base): the
            # engine starts from the model and processor as loaded, saved to a temporary folder
            self._tmp = tempfile.TemporaryDirectory(prefix="mig_vllm_")
            model_dir = self._tmp.name
            getattr(model, "module", model).save_pretrained(model_dir)
            processor.save_pretrained(model_dir)
        self.llm = vllm.LLM(**engine_kwargs(vcfg, str(Path(model_dir)), seed, world_size, rank, max_images, dtype))
        self.sleeps = vcfg.sleep and training
        self.asleep = False
        self.weights_dropped = False

    def sync_weights(self, model: Any) -> None:
        if self.asleep:
            torch.cuda.empty_cache()
            self.llm.wake_up(tags=["weights"])
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        with merged_adapters(model), torch.no_grad():
            runner.model.load_weights(synced_weights(model))
        self.llm.reset_prefix_cache()
        self.weights_dropped = False

    def generate(self, prompts: Prompts, sampling: Sampling, n: int = 1, seeds: Optional[list[int]] = None,
                 images: Optional[PromptImages] = None) -> tuple[list[str], torch.Tensor]:
        from vllm import SamplingParams

        if self.weights_dropped:
            raise RuntimeError("the vLLM engine slept since its last weight sync: call sync_weights(model) first")
        requests = engine_requests(prompts, n)
        params = [SamplingParams(**kw) for kw in sampling_kwargs(sampling, seeds, len(requests), stop_ids(self.tokenizer),
                                                                  vision_placeholder_ids(self.tokenizer))]
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        if self.sleeps:  # give the memory back to training; level 2 drops the weights (re-synced next step)
            self.llm.sleep(level=2)
            self.asleep = self.weights_dropped = True
        ids = pad_completions([o.outputs[0].token_ids for o in outputs], self.tokenizer.pad_token_id)
        return decode_completions(self.tokenizer, ids), ids
