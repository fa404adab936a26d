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
    _save_qwen_vl_preprocessor_config(folder)
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


# Scripted replies: for a test that needs a model stage's answer to pass the checks after it (a caption
# that names people, phrases that parse as JSON), which random weights never give. The architecture,
# tokenizer, preprocessing and generate() are the real ones; only the embeddings and two output rows
# are set so that greedy decoding answers any prompt with a fixed text.

def save_scripted_tokenizer(folder: Path, reply: str):
    """The tiny tokenizer plus `reply` as one added (non-special) token, so it decodes to `reply` exactly."""
    from tokenizers import AddedToken

    tokenizer = save_tiny_tokenizer(folder)
    tokenizer.add_tokens([AddedToken(reply, normalized=False, special=False)])
    tokenizer.save_pretrained(folder)
    return tokenizer


def script_greedy_reply(model, tokenizer, reply: str, scale: float = 100.0) -> None:
    """Set a random causal LM so that greedy decoding answers any prompt with `reply` (one added token)
    followed by the end of the turn: every token's embedding points along hidden dimension 1, the reply
    token's along dimension 0, `scale` times larger than anything the random layers add to the residual
    stream; the output head maps dimension 1 to the reply token and dimension 0 to the eos token."""
    reply_id, eos_id = tokenizer.convert_tokens_to_ids(reply), tokenizer.eos_token_id
    embeddings, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if embeddings.data_ptr() == head.data_ptr():
        raise ValueError("scripting needs untied input and output embeddings")
    with torch.no_grad():
        embeddings[:, :2] = 0.0
        embeddings[:, 1] = scale
        embeddings[reply_id] = 0.0
        embeddings[reply_id, 0] = scale
        head[reply_id] = 0.0
        head[reply_id, 1] = 1.0
        head[eos_id] = 0.0
        head[eos_id, 0] = 1.0


def save_scripted_qwen_vl(folder: Path, reply: str, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """Like save_tiny_qwen_vl (random vision tower and layers), but it captions every video with `reply`."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    tokenizer = save_scripted_tokenizer(folder, reply)
    model_class = Qwen2_5_VLForConditionalGeneration if family == "qwen2_5_vl" else Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    model = model_class(tiny_qwen_vl_config(tokenizer, family))
    script_greedy_reply(model, tokenizer, reply)
    model.save_pretrained(folder)
    _save_qwen_vl_preprocessor_config(folder)
    return folder


def save_scripted_causal_lm(folder: Path, reply: str, seed: int = 0) -> Path:
    """Like save_tiny_causal_lm (random layers, ChatML template), but it answers every chat with `reply`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = save_scripted_tokenizer(folder, reply)
    text = _text_config(tokenizer)
    del text["rope_parameters"]
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**text))
    script_greedy_reply(model, tokenizer, reply)
    model.save_pretrained(folder)
    return folder


def _save_qwen_vl_preprocessor_config(folder: Path) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))


# preprocessor_config.json of openai/clip-vit-large-patch14 (the CLIP the LAION aesthetic head was
# trained on), in the newer dict layout
CLIP_L14_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor", "rescale_factor": 1 / 255,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "size": {"shortest_edge": 224},
}


def save_tiny_clip_vision(folder: Path, seed: int = 0) -> Path:
    """A random CLIP vision tower with projection, small but with ViT-L/14's 768-wide projection (the
    LAION aesthetic head's input), and ViT-L/14's preprocessor config."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=224, patch_size=32, projection_dim=768)
    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(CLIP_L14_PREPROCESSOR))
    return folder
