"""Rule-based rewards: plain functions `reward(completions, **columns) -> list[float | None]`, chosen by
name with weights in config (`rl.rewards: {iou: 1.0, format: 0.5}`). All of them score through
`mig_lab.boxes`, the parser and IoU that evaluation uses, so training and evaluation never disagree.

Columns (one entry per completion): `answer` (ground-truth box, normalised), `answer_image` (0-based
image of that box), `image_sizes` (per-image (h, w) the model saw), `convention` (box convention of the
model family), and the two reading rules of `rl` (mig_lab/config.py, README "Rewards"): `no_answer_block`
(whole_text | zero) and `unnamed_image` (answer | first). None means "not applicable to this sample" and is
left out of the weighted sum.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from mig_data.cot.trajectory import trajectory_errors
from mig_lab.boxes import ANSWER_BLOCK, Parsed, iou, is_think_answer, json_box_in_answer, parse_response
from mig_lab.config import ConfigError

RewardFn = Callable[..., list[Optional[float]]]
REWARDS: dict[str, RewardFn] = {}


def reward(name: str):
    def register(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return register


def _parse(completion: str, convention: str, image_sizes, answer_image, no_answer_block: str = "whole_text",
           unnamed_image: str = "answer") -> Parsed:
    """The completion's answer box and image, read by the rules `rl.no_answer_block` and `rl.unnamed_image`."""
    if no_answer_block == "zero" and not ANSWER_BLOCK.search(completion):
        return Parsed(None, None, False)
    default = (answer_image or 0) if unnamed_image == "answer" else 0
    return parse_response(completion, convention, image_sizes=image_sizes, default_image=default)


def _rules(n: int, columns: dict) -> tuple[Sequence[str], Sequence[str]]:
    """The two reading rules per completion (the defaults when a caller passes none)."""
    return (columns.get("no_answer_block") or ["whole_text"] * n, columns.get("unnamed_image") or ["answer"] * n)


@reward("iou")
def iou_reward(completions: Sequence[str], answer: Sequence, convention: Sequence[str],
               image_sizes: Sequence, answer_image: Sequence, **columns) -> list[Optional[float]]:
    """IoU of the answer's box with the ground truth (coldstart_rl.txt 3.3); 0 when nothing parses."""
    out = []
    for c, gt, conv, sizes, img, scope, unnamed in zip(completions, answer, convention, image_sizes, answer_image,
                                                     *_rules(len(completions), columns)):
        out.append(None if gt is None else iou(gt, _parse(c, conv, sizes, img, scope, unnamed).box))
    return out


@reward("acc50")
def acc50_reward(completions: Sequence[str], **columns) -> list[Optional[float]]:
    """1 when the answer's IoU with the ground truth is >= 0.5 (Acc@0.5 per completion)."""
    return [None if v is None else float(v >= 0.5) for v in iou_reward(completions, **columns)]


@reward("format")
def format_reward(completions: Sequence[str], **_) -> list[Optional[float]]:
    """1 for `<think>...</think><answer>...</answer>` with a JSON `bbox_2d` box in the answer, else 0."""
    return [float(is_think_answer(c) and json_box_in_answer(c)) for c in completions]


@reward("image")
def image_reward(completions: Sequence[str], answer_image: Sequence, convention: Sequence[str],
                 image_sizes: Sequence, **columns) -> list[Optional[float]]:
    """MIRG-RL r_img: 1 when the answer's image is the ground truth's, else 0 (mirg_rl.txt eq. 2). The answer's
    image is the one the scorer gives the scored box (`mig_lab.boxes.parse_response(...).image`, one rule for
    both): the image named most recently before the box (`<bbox_id>[N-M]` or `Image-N`), else the first image
    the answer names; an answer without a box: the first image it names; none named: 0."""
    out = []
    for c, gt, conv, sizes, scope, unnamed in zip(completions, answer_image, convention, image_sizes,
                                                *_rules(len(completions), columns)):
        out.append(None if gt is None else float(_parse(c, conv, sizes, gt, scope, unnamed).image == gt))
    return out


@reward("object")
def object_reward(completions: Sequence[str], **columns) -> list[Optional[float]]:
    """MIRG-RL r_obj: IoU of the answer's box with the ground truth (mirg_rl.txt eq. 1)."""
    return iou_reward(completions, **columns)


@reward("mirg_format")
def mirg_format_reward(completions: Sequence[str], image_sizes: Sequence, **_) -> list[Optional[float]]:
    """MIRG-RL r_fmt (mirg_rl.txt 2.3): 1 for a valid trajectory, else 0. Valid = the trajectory
    validator finds nothing (`mig_data.cot.trajectory.trajectory_errors`): `<think>...</think>
    <answer>...</answer>` and nothing else; every `<bbox_id>[N-M]` well-formed, N within the sample's
    images, defined with a box before any bare use, one object per id; boxes in range with ordered
    corners; and an answer that resolves to a box (its bbox_id's, or one it writes). Unlike `format`,
    no JSON box is demanded: a bare bbox_id answer is the MIRG form."""
    return [float(not trajectory_errors(c, len(sizes), sizes)) for c, sizes in zip(completions, image_sizes)]


def check_rewards(cfg: Any, inputs: dict[str, str]) -> None:
    """Planning: every name in `rl.rewards` is a registered reward with a numeric weight."""
    weights = dict(cfg.rl.rewards)
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise ConfigError(f"config key 'rl.rewards' names unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
    if bad:
        raise ConfigError(f"config key 'rl.rewards' needs a number as each reward's weight; got {bad}")


def score_rewards(completions: Sequence[str], weights: dict[str, float], **columns
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the named rewards. Returns total [N] and each component [N] (NaN = not applicable)."""
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise ValueError(f"rl.rewards names unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    components = {}
    total = torch.zeros(len(completions))
    for name, weight in weights.items():
        values = REWARDS[name](completions, **columns)
        if len(values) != len(completions):
            raise ValueError(f"reward {name!r} returned {len(values)} values for {len(completions)} completions")
        comp = torch.tensor([float("nan") if v is None else float(v) for v in values])
        components[name] = comp
        total += weight * torch.nan_to_num(comp, nan=0.0)
    return total, components
