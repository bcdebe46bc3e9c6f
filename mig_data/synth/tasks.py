"""MIG-Synth task registry: MIG-Bench's ten task names (plus the general data) -> generators.

A generator is `gen(rng, cfg) -> SynthItem` (`cfg` = `data.synth`). Answers are boxes normalised
to the image they belong to (`answer_image`); responses are written in the canonical Qwen2-VL
syntax (the box codec rewrites them for other families). Every item keeps its scene graph and
names its target in `meta` (see `mig_data.synth.items`).

    spontaneous.py     diff, view_diff, common_object
    referential.py     group_grounding, refer_grounding, region, object_tracking, multi_view
    visual_textual.py  reasoning, correspondence
    general.py         single_grounding, understanding
"""

from __future__ import annotations

import random
from typing import Callable

from mig_data.synth.free_form import gen_free_form
from mig_data.synth.general import gen_single_grounding, gen_understanding
from mig_data.synth.items import ORDINALS, SynthItem, fill_scene
from mig_data.synth.referential import (
    gen_group_grounding,
    gen_multi_view,
    gen_object_tracking,
    gen_refer_grounding,
    gen_region,
)
from mig_data.synth.spontaneous import gen_common_object, gen_diff, gen_view_diff
from mig_data.synth.visual_textual import gen_correspondence, gen_reasoning
from mig_lab.boxes import qwen2_box

__all__ = ["TASK_GENERATORS", "SynthItem", "ORDINALS", "fill_scene", "qwen2_box"]

TASK_GENERATORS: dict[str, Callable[[random.Random, object], SynthItem]] = {
    # spontaneous grounding
    "diff": gen_diff,
    "view_diff": gen_view_diff,
    "common_object": gen_common_object,
    # referential grounding: visual reference
    "object_tracking": gen_object_tracking,
    "multi_view": gen_multi_view,
    "region": gen_region,
    "refer_grounding": gen_refer_grounding,
    # textual reference
    "group_grounding": gen_group_grounding,
    # visual + textual reference
    "reasoning": gen_reasoning,
    "correspondence": gen_correspondence,
    # general data of the training mixtures
    "single_grounding": gen_single_grounding,
    "understanding": gen_understanding,
    "free_form": gen_free_form,  # Migician stage 2: free-form cross-image QA (free_form.py)
}
