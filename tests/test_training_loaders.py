"""Loading released weights from local paths: Wan2.1 DiT (original and diffusers keys), Wan2.1 VAE,
wav2vec2 and umT5 (tiny random models saved in the real layouts, then loaded strictly)."""
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.audio import Wav2Vec2Encoder  # noqa: E402
from training.config import VAEConfig, load_config  # noqa: E402
from training.dit import InterActDiT  # noqa: E402
from training.loaders import ORIGINAL_TO_DIFFUSERS, load_wan_dit, rename_keys  # noqa: E402
from training.testing import REPO_ROOT, micro_config, single_torch_thread  # noqa: F401, E402
from training.text import UMT5TextEncoder  # noqa: E402
from training.vae import WanVAE, build_vae  # noqa: E402

CONFIG = micro_config().model


def base_state(model):
    names = set(model.base_parameter_names())
    return {k: v.clone() for k, v in model.state_dict().items() if k in names}


def test_wan_1_3b_config_has_the_released_layout():
    config = load_config(REPO_ROOT / "configs" / "model_wan1_3b.yaml", ["model.checkpoint=null"]).model
    with torch.device("meta"):
        model = InterActDiT(config)
    state = model.state_dict()
    expected = {
        "patch_embedding.weight": (1536, 16, 1, 2, 2),
        "text_embedding.0.weight": (1536, 4096),
        "time_embedding.0.weight": (1536, 256),
        "time_projection.1.weight": (9216, 1536),
        "blocks.0.self_attn.norm_q.weight": (1536,),
        "blocks.0.norm3.weight": (1536,),
        "blocks.0.cross_attn.o.weight": (1536, 1536),
        "blocks.29.ffn.0.weight": (8960, 1536),
        "blocks.29.modulation": (1, 6, 1536),
        "head.head.weight": (64, 1536),
        "head.modulation": (1, 2, 1536),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    base = model.base_parameter_names()
    assert sum(state[k].numel() for k in base) == 1_418_996_800  # Wan2.1-T2V-1.3B
    assert not any(k.startswith("blocks.0.norm1") or k.startswith("blocks.0.norm2") for k in base)  # no affine


def test_dit_loads_original_layout_strictly(tmp_path):
    torch.manual_seed(1)
    source = InterActDiT(CONFIG)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(base_state(source), str(path))
    torch.manual_seed(2)
    target = InterActDiT(CONFIG)
    added_before = {k: v.clone() for k, v in target.state_dict().items() if "audio_attn" in k}
    load_wan_dit(target, path)
    for key, value in base_state(source).items():
        torch.testing.assert_close(target.state_dict()[key], value)
    for key, value in added_before.items():  # the InterActHuman additions are not in the file
        torch.testing.assert_close(target.state_dict()[key], value)

    incomplete = base_state(source)
    del incomplete["blocks.1.ffn.2.bias"]
    save_file(incomplete, str(tmp_path / "incomplete.safetensors"))
    with pytest.raises(KeyError, match="missing"):
        load_wan_dit(target, tmp_path / "incomplete.safetensors")
    extra = dict(base_state(source), **{"img_emb.proj.0.weight": torch.zeros(3)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(KeyError, match="unexpected"):
        load_wan_dit(target, tmp_path / "extra.safetensors")


def test_dit_loads_diffusers_layout_from_a_sharded_folder(tmp_path):
    torch.manual_seed(1)
    state = base_state(InterActDiT(CONFIG))
    diffusers = rename_keys(state, ORIGINAL_TO_DIFFUSERS)
    for name in ["blocks.0.attn1.to_q.weight", "blocks.0.attn1.to_out.0.weight", "blocks.0.attn2.norm_k.weight",
                 "blocks.0.norm2.weight", "blocks.0.ffn.net.0.proj.weight", "blocks.0.scale_shift_table",
                 "condition_embedder.time_proj.weight", "condition_embedder.text_embedder.linear_2.bias",
                 "scale_shift_table", "proj_out.weight"]:
        assert name in diffusers, name
    keys = sorted(diffusers)
    folder = tmp_path / "transformer"
    folder.mkdir()
    save_file({k: diffusers[k] for k in keys[: len(keys) // 2]}, str(folder / "diffusion_pytorch_model-00001-of-00002.safetensors"))
    save_file({k: diffusers[k] for k in keys[len(keys) // 2 :]}, str(folder / "diffusion_pytorch_model-00002-of-00002.safetensors"))
    target = InterActDiT(CONFIG)
    load_wan_dit(target, folder)
    for key, value in state.items():
        torch.testing.assert_close(target.state_dict()[key], value)


def test_wan_vae_layout_load_and_causality(tmp_path):
    with torch.device("meta"):
        released = WanVAE()
    shapes = {k: tuple(v.shape) for k, v in released.state_dict().items()}
    assert sum(v.numel() for v in released.state_dict().values()) == 126_892_531
    assert shapes["encoder.downsamples.0.residual.0.gamma"] == (96, 1, 1, 1)
    assert shapes["encoder.middle.1.to_qkv.weight"] == (1152, 384, 1, 1)
    assert shapes["decoder.upsamples.3.time_conv.weight"] == (768, 384, 3, 1, 1)
    assert shapes["decoder.upsamples.4.shortcut.weight"] == (384, 192, 1, 1, 1)
    assert shapes["conv1.weight"] == (32, 32, 1, 1, 1) and shapes["conv2.weight"] == (16, 16, 1, 1, 1)

    torch.manual_seed(0)
    source = WanVAE(base_dim=8)
    torch.save(source.state_dict(), tmp_path / "Wan2.1_VAE.pth")
    vae = build_vae(VAEConfig(kind="wan", checkpoint=str(tmp_path / "Wan2.1_VAE.pth"), wan_base_dim=8))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(vae.state_dict()[key], value)
    video = torch.rand(1, 3, 13, 32, 32) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (1, 16, 4, 4, 4)
    torch.testing.assert_close(vae.encode(video[:, :, :5]), latents[:, :, :2])  # causal: later frames change nothing
    torch.testing.assert_close(vae.encode(video, chunk_frames=12), latents)  # chunking is only a memory choice
    decoded = vae.decode(latents)
    assert decoded.shape == (1, 3, 13, 32, 32)
    torch.testing.assert_close(vae.decode(latents, chunk_frames=4), decoded)
    torch.save({**source.state_dict(), "stray": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError):
        build_vae(VAEConfig(kind="wan", checkpoint=str(tmp_path / "bad.pth"), wan_base_dim=8))


def test_wav2vec2_loads_from_a_local_folder(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(tmp_path)
    saved = Wav2Vec2Model.from_pretrained(tmp_path, local_files_only=True, output_loading_info=True)
    assert not any(saved[1][kind] for kind in ("missing_keys", "unexpected_keys"))
    encoder = Wav2Vec2Encoder(str(tmp_path))
    for key, value in saved[0].state_dict().items():
        torch.testing.assert_close(encoder.model.state_dict()[key], value)
    features = encoder(np.random.default_rng(0).standard_normal(16000).astype(np.float32))
    assert features.shape == (49, 32)  # 50 Hz, the conv stack drops the last partial frame


def test_umt5_text_encoder_from_a_local_folder(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "two": 3, "people": 4, "talk": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(tmp_path / "tokenizer")
    config = UMT5Config(vocab_size=8, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2, relative_attention_num_buckets=8)
    UMT5EncoderModel(config).save_pretrained(tmp_path / "text_encoder")
    encoder = UMT5TextEncoder(str(tmp_path), text_len=6, device=torch.device("cpu"), dtype=torch.float32)
    embeddings = encoder(["two people talk", "talk"])
    assert embeddings.shape == (2, 6, 16)
    assert embeddings[0, :3].abs().sum() > 0 and embeddings[0, 3:].abs().sum() == 0  # zero past the prompt
    assert embeddings[1, 1:].abs().sum() == 0
