"""Architectures of the Grounding-DINO and SAM2.1 checkpoints the masks stage loads, as transformers
configs, and random checkpoint folders built from them offline.

The real weights are not public anywhere we can fetch them from here, so the benchmark measures the
real architectures with random weights, and the tests run miniature ones through the same code. A
folder written by `save_random_grounding_dino` / `save_random_sam2_video` loads exactly like a
downloaded one (config, weights, BERT WordPiece tokenizer, preprocessor config).

Sizes: Grounding-DINO "tiny" is IDEA-Research/grounding-dino-tiny (Swin-T backbone), "base" is
grounding-dino-base (Swin-B); both read text with bert-base-uncased. SAM2.1 "large" is
facebook/sam2.1-hiera-large (sam2.1_hiera_l.yaml: Hiera embed 144, stages 2-6-36-4, global blocks
23/33/43, windows 8-4-16-8). "test" sizes are a few layers of a few channels, for CPU tests.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from transformers import (BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection, Sam2VideoConfig,
                          Sam2VideoModel)

from stages.models.image_preprocessing import IMAGENET_MEAN, IMAGENET_STD

GroundingDinoSize = Literal["tiny", "base", "test"]
Sam2Size = Literal["large", "test"]

# bert-base-uncased ids that Grounding-DINO hard-codes as phrase delimiters ([CLS], [SEP], ".", "?")
BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
BERT_BASE_VOCAB_SIZE = 30522
TEST_WORDS = ("person", "people", "woman", "man", "girl", "boy", "child", "children", "in", "a", "with", "the",
              "white", "black", "red", "blue", "shirt", "dress", "hair", "long", "braids", "on", "bed", "jumping")


def grounding_dino_config(size: GroundingDinoSize, vocab_size: int = BERT_BASE_VOCAB_SIZE) -> GroundingDinoConfig:
    bert_base = dict(model_type="bert", vocab_size=vocab_size)
    if size == "tiny":
        swin_t = dict(model_type="swin", out_indices=[2, 3, 4])  # transformers' Swin defaults are Swin-T
        return GroundingDinoConfig(backbone_config=swin_t, text_config=bert_base)
    if size == "base":
        swin_b = dict(model_type="swin", embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                      window_size=12, image_size=384, out_indices=[2, 3, 4])
        return GroundingDinoConfig(backbone_config=swin_b, text_config=bert_base)
    swin = dict(model_type="swin", embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
                out_indices=[2, 3, 4])
    bert = dict(model_type="bert", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64)
    # two decoder layers: transformers ties the box heads of layers 1.. to layer 0 and needs a second one
    return GroundingDinoConfig(backbone_config=swin, text_config=bert, d_model=32, num_queries=30, encoder_layers=1,
                               decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                               decoder_attention_heads=2)


def sam2_video_config(size: Sam2Size) -> Sam2VideoConfig:
    if size == "large":
        hiera_l = dict(model_type="sam2_hiera_det_model", hidden_size=144, num_attention_heads=2,
                       blocks_per_stage=[2, 6, 36, 4], embed_dim_per_stage=[144, 288, 576, 1152],
                       num_attention_heads_per_stage=[2, 4, 8, 16], window_size_per_stage=[8, 4, 16, 8],
                       global_attention_blocks=[23, 33, 43])
        vision = dict(model_type="sam2_vision_model", backbone_config=hiera_l,
                      backbone_channel_list=[1152, 576, 288, 144])
        return Sam2VideoConfig(vision_config=vision)
    image_size = 128
    feature_sizes = [[image_size // 4] * 2, [image_size // 8] * 2, [image_size // 16] * 2]
    # a global-attention block may not open a stage (no window to pool queries in), hence 1-1-2-1 with block 3 global
    hiera = dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[image_size] * 2,
                 blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                 num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[8, 4, 4, 4],
                 global_attention_blocks=[3])
    vision = dict(model_type="sam2_vision_model", backbone_config=hiera, backbone_channel_list=[64, 32, 16, 8],
                  backbone_feature_sizes=feature_sizes, fpn_hidden_size=128)
    # hidden 128 > the memory's 64 channels: transformers splits object pointers into memory-sized tokens
    # and only handles a hidden size larger than the 64-channel memory (which its cross-attention fixes)
    return Sam2VideoConfig(
        vision_config=vision, image_size=image_size,
        prompt_encoder_config=dict(hidden_size=128, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=128, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=feature_sizes[-1], memory_encoder_hidden_size=128,
        mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64)


def save_wordpiece_tokenizer(folder: Path, vocab_size: int, words: tuple[str, ...] = TEST_WORDS) -> BertTokenizer:
    """An uncased BERT WordPiece tokenizer with bert-base-uncased's special-token ids, knowing `words`
    (everything else is [UNK]) and padded with unused tokens to `vocab_size`."""
    vocab = [f"[unused{i}]" for i in range(vocab_size)]
    for token, index in BERT_SPECIAL_IDS.items():
        vocab[index] = token
    first_free = max(BERT_SPECIAL_IDS.values()) + 1
    for offset, word in enumerate(words):
        vocab[first_free + offset] = word
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def save_random_grounding_dino(folder: Path, size: GroundingDinoSize, seed: int = 0,
                               shortest_edge: int = 800, longest_edge: int = 1333) -> Path:
    """A Grounding-DINO checkpoint folder with random weights, its tokenizer and preprocessor config."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = BERT_BASE_VOCAB_SIZE if size != "test" else max(BERT_SPECIAL_IDS.values()) + 1 + len(TEST_WORDS)
    save_wordpiece_tokenizer(folder, vocab_size)
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(grounding_dino_config(size, vocab_size)).save_pretrained(folder)
    _write_preprocessor_config(folder, {"shortest_edge": shortest_edge, "longest_edge": longest_edge})
    return folder


def save_random_sam2_video(folder: Path, size: Sam2Size, seed: int = 0, object_score_bias: float | None = None) -> Path:
    """A SAM2.1 video checkpoint folder with random weights and its preprocessor config.

    object_score_bias: sets the output bias of the object-score head, so that a random model reports
    every object as visible (positive, its logit ~ the bias) or as absent (negative)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Sam2VideoModel(sam2_video_config(size))
    if object_score_bias is not None:
        with torch.no_grad():
            model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_score_bias)
    model.save_pretrained(folder)
    side = model.config.image_size
    _write_preprocessor_config(folder, {"height": side, "width": side})
    return folder


def _write_preprocessor_config(folder: Path, size: dict) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": size, "do_resize": True, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}, indent=1))
