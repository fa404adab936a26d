"""Tiny randomly initialised transformers checkpoints built offline, for the caption and phrases tests.

The tokenizer is a byte-level BPE trained here on a few sentences, with Qwen's special tokens and
ChatML template; the models are real Qwen2(.5)-VL / Qwen2 architectures shrunk to a few layers.
Nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TRAINING_TEXT = [
    "Two women sit at a table in a bright room and talk to each other; one smiles and gestures.",
    "A girl with long brown hair braids the hair of another girl who laughs at the camera.",
    '{"subjects": [{"phrase": "woman in a white shirt", "appearance": "short black hair", "kind": "person"}]}',
]


def save_tiny_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=QWEN_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(TRAINING_TEXT, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def _text_config(tokenizer) -> dict:
    # head_dim 16: Qwen's multimodal RoPE splits its 8 frequencies into (temporal, height, width) = 2+3+3
    return dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def tiny_qwen_vl_config(tokenizer, family: str = "qwen2_5_vl"):
    """A two-layer Qwen2.5-VL (or Qwen2-VL) configuration whose special token ids are the tokenizer's."""
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    token_ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    if family == "qwen2_5_vl":
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      fullatt_block_indexes=[1], window_size=56, tokens_per_second=2)
        return Qwen2_5_VLConfig(text_config=_text_config(tokenizer), vision_config=vision, **token_ids)
    vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2)
    return Qwen2VLConfig(text_config=_text_config(tokenizer), vision_config=vision, **token_ids)


def save_tiny_qwen_vl(folder: Path, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """A random Qwen2.5-VL (or Qwen2-VL) checkpoint folder with tokenizer and preprocessor config."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    config = tiny_qwen_vl_config(save_tiny_tokenizer(folder), family)
    model_class = Qwen2_5_VLForConditionalGeneration if family == "qwen2_5_vl" else Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    model_class(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return folder


def save_tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A random Qwen2 causal LM with the tiny tokenizer and a ChatML chat template."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = save_tiny_tokenizer(folder)
    text = _text_config(tokenizer)
    del text["rope_parameters"]
    torch.manual_seed(seed)
    Qwen2ForCausalLM(Qwen2Config(**text)).save_pretrained(folder)
    return folder
