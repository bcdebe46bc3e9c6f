"""The tiny model's offline tokenizer and processor."""

from __future__ import annotations

from transformers import AutoProcessor

from mig_models.builders import build_tiny, save_model
from mig_models.tokenizer import SPECIAL_TOKENS, build_bpe_tokenizer, load_bpe_files, train_bpe
from tests.conftest import compose_cfg


def test_shipped_bpe_files_are_what_training_produces():
    assert train_bpe() == load_bpe_files()


def test_special_tokens_are_atomic_and_after_the_bpe_vocab():
    tok = build_bpe_tokenizer()
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
    bpe_size = len(load_bpe_files()[0])
    assert ids == list(range(bpe_size, bpe_size + len(SPECIAL_TOKENS)))
    for special in SPECIAL_TOKENS:
        assert tok(special, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(special)]
    assert 1000 < len(tok) <= 2100


def test_round_trip_and_digit_tokens():
    tok = build_bpe_tokenizer()
    text = "Image-2: <|box_start|>(120,45),(999,1000)<|box_end|> the red star <think>ok</think>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok("(120,45)", add_special_tokens=False)["input_ids"])
    assert "1" in pieces and "2" in pieces and "0" in pieces  # digits are single tokens (Qwen2 regex)


def test_chat_template_matches_qwen_layout():
    tok = build_bpe_tokenizer()
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "find it"}]},
            {"role": "assistant", "content": "ok"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>find it<|im_end|>\n"
        "<|im_start|>assistant\nok<|im_end|>\n")
    assert tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n")


def test_processor_saves_and_autoloads_offline(tmp_path):
    cfg = compose_cfg([])
    model, processor = build_tiny(cfg.model, seed=0)
    save_model(model, processor, tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "Qwen2VLProcessor"
    assert loaded.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    text = "<|vision_start|><|image_pad|><|vision_end|>hi"
    from PIL import Image

    batch = loaded(text=[text], images=[[Image.new("RGB", (112, 112))]], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 16  # 8x8 patches, 2x2 merge


def test_real_qwen_vocabulary_option_has_qwen2_vl_special_ids():
    from mig_models.tokenizer import build_qwen_tokenizer

    tok = build_qwen_tokenizer()
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|box_start|>", "<|image_pad|>"]) == [
        151643, 151644, 151648, 151655]
    cfg = compose_cfg(["model.tokenizer=qwen"])
    model, processor = build_tiny(cfg.model, seed=0)
    assert model.config.image_token_id == 151655
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer)
