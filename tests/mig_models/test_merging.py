"""Model merging: weight averaging and task arithmetic on saved model folders."""

from __future__ import annotations

import pytest
import torch

from mig_models.builders import build_tiny, save_model
from mig_models.merging import MergeError, average, load_folder_state, merge_folders, task_arithmetic
from scripts.merge_models import main
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    cfg = compose_cfg([])
    paths = []
    for seed in (0, 1):
        model, processor = build_tiny(cfg.model, seed=seed)
        save_model(model, processor, root / f"m{seed}")
        paths.append(root / f"m{seed}")
    return paths


def test_average_of_two_checkpoints_is_the_elementwise_mean(two_models, tmp_path):
    out = merge_folders(two_models, tmp_path / "avg")
    a, b, m = (load_folder_state(p) for p in (*two_models, out))
    assert a.keys() == m.keys()
    for k in a:
        assert torch.allclose(m[k], (a[k] + b[k]) / 2, atol=1e-7), k
    # the merged folder is a loadable model with the processor alongside
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    Qwen2VLForConditionalGeneration.from_pretrained(out)
    AutoProcessor.from_pretrained(out)


def test_weighted_average_and_weight_normalisation():
    a, b = {"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([4.0, 0.0])}
    assert average([a, b], [3, 1])["w"].tolist() == pytest.approx([1.0, 3.0])
    with pytest.raises(MergeError, match="2 weights for 3"):
        average([a, b, a], [1, 1])


def test_task_arithmetic():
    base = {"w": torch.tensor([1.0, 1.0])}
    ft1, ft2 = {"w": torch.tensor([2.0, 1.0])}, {"w": torch.tensor([1.0, 3.0])}
    assert task_arithmetic(base, [ft1, ft2], scale=0.5)["w"].tolist() == pytest.approx([1.5, 2.0])


def test_merging_refuses_mismatched_checkpoints(two_models, tmp_path):
    a = {"w": torch.zeros(2), "v": torch.zeros(1)}
    with pytest.raises(MergeError, match="missing keys"):
        average([a, {"w": torch.zeros(2)}])
    with pytest.raises(MergeError, match=r"'w' has shape \(3,\)"):
        average([a, {"w": torch.zeros(3), "v": torch.zeros(1)}])
    with pytest.raises(MergeError, match="dtype"):
        average([a, {"w": torch.zeros(2, dtype=torch.float64), "v": torch.zeros(1)}])
    # a different architecture (Qwen2.5-VL) is refused by folder merging
    cfg = compose_cfg(["model=tiny_qwen2_5_vl"])
    model, processor = build_tiny(cfg.model, seed=0)
    save_model(model, processor, tmp_path / "q25")
    with pytest.raises(MergeError, match="architectures differ"):
        merge_folders([two_models[0], tmp_path / "q25"], tmp_path / "bad")


def test_cli(two_models, tmp_path, capsys):
    main([str(two_models[0]), str(two_models[1]), "--out", str(tmp_path / "cli"), "--weights", "1,3"])
    assert "merged 2 checkpoint(s)" in capsys.readouterr().out
    a, b, m = (load_folder_state(p) for p in (*two_models, tmp_path / "cli"))
    k = next(iter(a))
    assert torch.allclose(m[k], 0.25 * a[k] + 0.75 * b[k], atol=1e-7)
