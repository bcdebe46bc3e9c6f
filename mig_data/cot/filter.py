"""The consistency filter of the cold-start CoT data (coldstart_rl.txt 3.2): ask the teacher for k
(default 4) responses per sample and keep the sample only when every response is right (IoU accuracy
1.0, i.e. each IoU >= 0.5 with the ground truth), scored by the evaluation scorer."""

from __future__ import annotations

from collections import Counter

from mig_data.schema import Sample
from mig_lab.boxes import iou, parse_response


def response_correct(sample: Sample, response: str, convention: str = "qwen2_vl", threshold: float = 0.5) -> bool:
    parsed = parse_response(response, convention, default_image=sample.answer_image or 0)
    return sample.answer is not None and iou(sample.answer, parsed.box) >= threshold


def consistency_filter(samples: list[Sample], responses: list[list[str]], threshold: float = 0.5
                       ) -> tuple[list[tuple[Sample, str]], dict]:
    """Keep (sample, first response) where all of the sample's responses are right; count the rest."""
    if len(samples) != len(responses):
        raise ValueError(f"{len(samples)} samples but {len(responses)} response lists")
    kept, dropped = [], Counter()
    for s, answers in zip(samples, responses):
        n_right = sum(response_correct(s, a, threshold=threshold) for a in answers)
        if answers and n_right == len(answers):
            kept.append((s, answers[0]))
        else:
            dropped[s.task] += 1
    stats = {"samples": len(samples), "kept": len(kept), "kept_fraction": len(kept) / max(1, len(samples)),
             "dropped_by_task": dict(dropped), "k": len(responses[0]) if responses else 0}
    return kept, stats
