"""The Migician CoT baselines (migician.txt Sec. 4.1 and 7.1, Appendix "Prompt Template for
Single-Image CoT"): two-step inference with an unchanged model.

  step 1  the model sees ALL images and describes the target in a short phrase (group grounding:
          it names the image the target is in);
  step 2  single-image CoT (`eval.cot=single`): the model sees ONLY the target image and grounds the
          step-1 phrase there, so the box's coordinates refer to that image;
          multi-image CoT (`eval.cot=multi`): the model sees all images again, told to look only at
          the target image, and grounds the phrase (coordinates again refer to the target image).

The step-2 image is the sample's answer image (`Sample.answer_image`). On MIG-Bench that is the image
the question names ("in the 3th image"; the 2nd image of the pair tasks; the source image of region
locating), which is exactly the published pipeline's choice (`eval/MIG_bench_cot.py`; checked on
all 4,295 records). For group grounding it is the image step 1 picked; if step 1 names none, the
first image, as the paper's note says.

Templates are the paper's appendix text; `[RESPONCE]` is the step-1 answer stripped of spaces, a
final period and special tokens. The paper's `<object_ref_start>` tokens are written in Qwen's real
spelling `<|object_ref_start|>` (the published code does so), and the red-box coordinates
`(<lbox_start>(A,B),(C,D)<lbox_end>)` of the multi-view and correspondence templates come from the
box in the question when it has one, and are left out when it has none. Step 2 always ends with the
family's format prompt (`eval/MIG_bench_cot.py` appends it to every step-2 question); step 1 never
does (it asks for a phrase).

Differences from the published code, on purpose: its Qwen2-VL functions rebuild the step-1 messages
from the ORIGINAL question (`qwen2_process(obj)`), so the step-1 template never reaches the model, and
its multi-image variant does the same in step 2; here each step's own prompt is what the model gets
(and each prediction records both prompts as the model saw them). The multi-image step-2 prefix is
"Now ONLY look at the <ordinal> image." (the code's typo "ONIY" fixed).
"""

from __future__ import annotations

import re

from mig_data.schema import DataError, Sample
from mig_lab.boxes import NUM_DIGITS, QWEN2_BOX

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")

STEP1 = {
    "diff": "Compare these two images carefully and tell me where does they differ. "
            "Please answer briefly in single phrase or words.",
    "view_diff": "Compare these two images carefully and describe the prominent different object "
                 "with really simple words or phrase.",
    "refer_grounding": "Watch carefully and briefly describe the object in the Image-1.",
    "common_object": "These images share one object in common. Recognize it and tell me its name in "
                     "single phrase or words.",
    "region": "Describe the content of the {nth} picture with simple phrase or words.",
    "multi_view": "Describe the object in the first image marked with red bounding box{box} with simple "
                  "phrase or word. You can refer to other images for more precise recognition and description.",
    "object_tracking": "Describe the object in the first image marked with red bounding box with simple phrase.",
    "group_grounding": "{question} Just recognize and tell me which image is it in. Answer from: {choices}.",
    "reasoning": "{question} Name this object in the Image-2 with simple phrase.",
    "correspondence": "For the first image, describe the semantic/functional feature of the area marked by "
                      "the red bounding box{box}.",
}

STEP2 = {
    "diff": "According to the object difference/change: {r}, please ground this difference with "
            "bounding box coordinates.",
    "view_diff": 'Now ground the object difference/change : "{r}" with bounding box coordinates.',
    "refer_grounding": "Please find and ground the object <|object_ref_start|>{r}<|object_ref_end|> with "
                       "bounding box coordinates.",
    "common_object": "Please locate and ground the target object according to the reference: "
                     "<|object_ref_start|> {r} <|object_ref_end|>",
    "region": "Please ground the object <|object_ref_start|>{r}<|object_ref_end|> with bounding box coordinates.",
    "multi_view": "Locate and ground the object <|object_ref_start|> {r} <|object_ref_end|> with bounding "
                  "box coordinates.",
    "object_tracking": "Now ground the target moving object {r} with bounding box coordinates.",
    "group_grounding": "{question}",
    "reasoning": "Please locate and ground the object <|object_ref_start|>{r}<|object_ref_end|> with "
                 "bounding box coordinates.",
    "correspondence": "Ground the area that shares the same semantic or functional meaning of: {r}.",
}

MULTI_PREFIX = "Now ONLY look at the {ordinal} image. "
# The reasoning task's question ends by asking for the box, which step 1 must not do (published code).
_REASONING_TAIL = "Find it and locate it in the second image. "
_SPECIAL = re.compile(r"<\|[a-z_]+\|>")
_REGION_NTH = re.compile(rf"(\d{{1,{NUM_DIGITS}}})(?:st|nd|rd|th) region")
_PICK = re.compile(rf"\b(?:Image|image|Picture|picture)[\s-]?(\d{{1,{NUM_DIGITS}}})\b|\b(" + "|".join(ORDINALS)
                   + rf")\b|\b(\d{{1,{NUM_DIGITS}}})th\b",
                   re.IGNORECASE)


def _check_task(sample: Sample) -> None:
    if sample.task not in STEP1:
        raise DataError(f"sample {sample.id}: no CoT template for task {sample.task!r} "
                        f"(the Migician CoT covers {sorted(STEP1)}); use eval.cot=none for it")


def region_picture(sample: Sample) -> int:
    """1-based number of the region picture a region-locating sample asks about (the source is 1)."""
    m = _REGION_NTH.search(sample.question)
    if m:
        return int(m.group(1)) + 1
    if isinstance(sample.meta.get("region_image"), int):
        return sample.meta["region_image"] + 1
    return 2


def _question_box(sample: Sample) -> str:
    m = QWEN2_BOX.search(sample.question)
    return f"({m.group(0)})" if m else ""


def step1_question(sample: Sample) -> str:
    """What the model is asked in step 1 (it sees all of the sample's images)."""
    _check_task(sample)
    n = len(sample.images)
    return STEP1[sample.task].format(
        nth=f"{region_picture(sample)}th",
        box=_question_box(sample),
        question=sample.question.replace(_REASONING_TAIL, "").strip(),
        choices=" | ".join(f"Image{k}" for k in range(1, n + 1)),
    )


def clean_description(step1_response: str) -> str:
    """The step-1 answer as it goes into the step-2 template (published: `.strip().strip('.')`)."""
    return _SPECIAL.sub("", step1_response).strip().strip(".").strip()


def pick_image(step1_response: str, n_images: int) -> int:
    """0-based image a group-grounding step-1 answer names (first mention), else 0."""
    for m in _PICK.finditer(step1_response):
        if m.group(1):
            k = int(m.group(1)) - 1
        elif m.group(2):
            k = ORDINALS.index(m.group(2).lower())
        else:
            k = int(m.group(3)) - 1
        if 0 <= k < n_images:
            return k
    return 0


def step2_image(sample: Sample, step1_response: str) -> int:
    """The image step 2 grounds in: step 1's pick for group grounding, else the answer image."""
    if sample.task == "group_grounding":
        return pick_image(step1_response, len(sample.images))
    return sample.answer_image or 0


def step2_question(sample: Sample, step1_response: str, mode: str, image: int) -> str:
    """What the model is asked in step 2 (before the format prompt). `mode`: single | multi."""
    _check_task(sample)
    text = STEP2[sample.task].format(r=clean_description(step1_response), question=sample.question.strip())
    if mode == "multi":
        ordinal = ORDINALS[image] if image < len(ORDINALS) else f"{image + 1}th"
        text = MULTI_PREFIX.format(ordinal=ordinal) + text
    elif mode != "single":
        raise ValueError(f"eval.cot={mode!r}: expected none, single or multi")
    return text


def step2_images(sample: Sample, mode: str, image: int) -> list[int]:
    """Which of the sample's images step 2 shows."""
    return [image] if mode == "single" else list(range(len(sample.images)))

