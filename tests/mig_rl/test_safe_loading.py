"""Files from elsewhere cannot run code: checkpoints load weights-only, the RefCOCO refs pickle loads plain data
only; each refusal names the file."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from lightning.fabric import Fabric

from mig_data.formats.coco import load_refs
from mig_data.schema import DataError
from mig_rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def _state():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": 3, "micro_batches": 6}


def test_our_checkpoints_load_weights_only_and_a_pickled_callable_is_refused(tmp_path):
    fabric = Fabric(accelerator="cpu", devices=1)
    state = _state()
    path = save_checkpoint(fabric, tmp_path / "ckpt", 3, state, {"seed": 0})
    fresh = _state()
    fresh["step"] = 0
    load_checkpoint(fabric, latest_checkpoint(tmp_path / "ckpt"), fresh)  # everything we write is weights-only
    assert fresh["step"] == 3 and torch.equal(fresh["model"].weight, state["model"].weight)

    payload = torch.load(path / "state.ckpt", weights_only=True)
    payload["hook"] = os.system  # a callable: unpickling it would import and hand back any function
    torch.save(payload, path / "state.ckpt")
    with pytest.raises(RuntimeError, match=rf"{path / 'state.ckpt'}: refused to load.*(posix|os)\.system"):
        load_checkpoint(fabric, path, _state())


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_refs_pickle_loads_plain_data_only(tmp_path):
    plain = tmp_path / "refs(unc).p"
    refs = [{"ref_id": 1, "ann_id": 2, "image_id": 3, "split": "val", "sentences": [{"sent": "the cat"}]}]
    plain.write_bytes(pickle.dumps(refs))
    assert load_refs(plain) == refs
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([_Evil()]))
    with pytest.raises(DataError, match=rf"{evil}: not a readable refs pickle.*(posix|os)\.system"):
        load_refs(evil)
