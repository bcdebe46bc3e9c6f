"""The vLLM backend up to the engine call (the engine itself runs in `make gpu-check` on a GPU machine):
its requests, sampling parameters, the weights it syncs, and one clear error when vLLM is missing."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from mig_data.collate import generation_prompts
from mig_data.loading import load_split
from mig_lab.config import ConfigError
from mig_lab.graph import plan
from mig_models.builders import build_tiny
from mig_models.generation import Sampling, make_backend, stop_ids, vision_placeholder_ids
from mig_models.lora import apply_lora
from mig_models.vllm_backend import (
    engine_kwargs,
    engine_requests,
    merged_adapters,
    pad_completions,
    sampling_kwargs,
    synced_weights,
    vllm_available,
)
from tests.conftest import compose_cfg

needs_no_vllm = pytest.mark.skipif(vllm_available(), reason="vllm is installed here: the missing-package error cannot show")


@needs_no_vllm
def test_choosing_vllm_without_it_fails_at_planning_with_one_clear_error(tmp_path):
    cfg = compose_cfg(["experiment=smoke", "generation.backend=vllm"], tmp_path)
    with pytest.raises(ConfigError, match=r"generation.backend.*'vllm'.*pip install -e '\.\[vllm\]'"):
        plan(cfg)
    model, processor = build_tiny(cfg.model, seed=0)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[vllm\]'"):
        make_backend(cfg, model, processor)


def test_requests_carry_the_chat_template_prompt_and_its_images(synth_data):
    cfg = compose_cfg([])
    _, processor = build_tiny(cfg.model, seed=0)
    samples = load_split(synth_data, "train")[:3]
    prompts = generation_prompts(processor, "qwen2_vl", samples)
    reqs = engine_requests(prompts, n=2)
    assert len(reqs) == 6
    for k, req in enumerate(reqs):
        s = samples[k // 2]  # prompt-major: both completions of prompt 0 first
        assert req["prompt"] == prompts.texts[k // 2]
        assert req["prompt"].count("<|vision_start|><|image_pad|><|vision_end|>") == len(s.images)
        assert req["prompt"].endswith("<|im_start|>assistant\n") and s.question in req["prompt"]
        assert [im.size for im in req["multi_modal_data"]["image"]] == [im.size for im in prompts.images[k // 2]]
    # the same text the HF path tokenizes: the processor turns it back into the HF prompt ids
    again = processor(text=prompts.texts, images=prompts.images, padding=True, padding_side="left", return_tensors="pt")
    assert torch.equal(again["input_ids"], prompts.tensors["input_ids"])


def test_sampling_parameters_seed_every_completion_and_stop_at_end_of_turn():
    cfg = compose_cfg([])
    _, processor = build_tiny(cfg.model, seed=0)
    tok = processor.tokenizer
    sampled = sampling_kwargs(Sampling(64, True, 0.7, 0.9), [5, 6, 7, 8], 4, stop_ids(tok), vision_placeholder_ids(tok))
    assert [kw["seed"] for kw in sampled] == [5, 6, 7, 8]
    assert all(kw["temperature"] == 0.7 and kw["top_p"] == 0.9 and kw["max_tokens"] == 64 and kw["n"] == 1
               for kw in sampled)
    assert set(sampled[0]["stop_token_ids"]) == {tok.convert_tokens_to_ids("<|im_end|>"),
                                                 tok.convert_tokens_to_ids("<|endoftext|>")}
    assert set(sampled[0]["logit_bias"]) == set(vision_placeholder_ids(tok)) and not sampled[0]["skip_special_tokens"]
    greedy = sampling_kwargs(Sampling(16), None, 3, stop_ids(tok), [])
    assert [kw["temperature"] for kw in greedy] == [0.0] * 3 and "seed" not in greedy[0]
    with pytest.raises(ValueError, match="one seed per completion"):
        sampling_kwargs(Sampling(8, True), [1], 2, set(), [])


def test_engine_arguments_colocate_with_the_training_ranks():
    v = OmegaConf.create({"gpu_memory_utilization": 0.25, "tensor_parallel_size": 2, "max_model_len": 2048,
                          "sleep": True, "enforce_eager": False})
    kw = engine_kwargs(v, "/models/qwen2-vl-7b", seed=3, world_size=4, rank=3, max_images=6, dtype="bfloat16")
    assert kw["distributed_executor_backend"] == "external_launcher"  # Fabric's ranks, no processes of vLLM's own
    assert kw["seed"] == 3 + 1  # ranks 2 and 3 form one tensor-parallel engine: the same seed
    assert kw["limit_mm_per_prompt"] == {"image": 6, "video": 0} and kw["enable_sleep_mode"]
    one = engine_kwargs(OmegaConf.merge(v, {"tensor_parallel_size": 1}), "/m", 0, 1, 0, 6, "bfloat16")
    assert "distributed_executor_backend" not in one


def test_synced_weights_are_the_merged_model_under_its_saved_names():
    cfg = compose_cfg([])
    base, _ = build_tiny(cfg.model, seed=0)
    lora_cfg = OmegaConf.merge(OmegaConf.structured(cfg.train.lora), {"r": 4, "alpha": 8})
    policy = apply_lora(copy.deepcopy(base), lora_cfg)
    for name, p in policy.named_parameters():  # adapters that do something (B starts at zero)
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    merged_reference = copy.deepcopy(policy).merge_and_unload().state_dict()
    with merged_adapters(policy):
        synced = {n: t.clone() for n, t in synced_weights(policy)}  # read while merged, as load_weights does
    assert synced.keys() == base.state_dict().keys() == merged_reference.keys()
    for name, tensor in synced.items():
        torch.testing.assert_close(tensor, merged_reference[name], atol=1e-6, rtol=0, msg=name)
    assert any("lora_" in n for n, _ in policy.named_parameters())  # unmerged again after the sync:
    after = {n.removeprefix("base_model.model.").replace(".base_layer.", "."): t
             for n, t in policy.state_dict().items() if "lora_" not in n}
    for name, tensor in after.items():  # the base weights are the base again (unmerge subtracts: to rounding)
        torch.testing.assert_close(tensor, base.state_dict()[name], atol=1e-6, rtol=0, msg=name)


def test_completions_pad_to_one_tensor():
    ids = pad_completions([[5, 6, 7], [8], []], pad=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
