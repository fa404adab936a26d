"""Sampling: the mask-cache schedule of Algorithm 1, the request line format, and the sample CLI."""
import os
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.build import Companions  # noqa: E402
from training.config import SampleConfig  # noqa: E402
from training.dit import DiTOutput  # noqa: E402
from training.media import wav_bytes  # noqa: E402
from training.sample import Conditions, MaskCache, Sampler, main, parse_request_line, read_requests  # noqa: E402
from training.testing import MICRO_DATA, TINY_CONFIG, micro_config, single_torch_thread  # noqa: F401, E402
from training.vae import PatchVAE, vae_geometry  # noqa: E402

VIDEO_TOKENS, REFS, LAYERS = 2 * 4 * 8, 2, 3


class RecordingModel(torch.nn.Module):
    """Stands in for the DiT: records each call's gate; at step k it predicts identity 0 on token k only."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(in_dim=192, mask_avg_last=2, patch_size=(1, 2, 2))
        self.conditional_gates, self.unconditional_gates = [], []

    def forward(self, latents, timesteps, text, ref_latents, audio, audio_muted, gate):
        if gate.mode == "muted":
            self.unconditional_gates.append(gate)
        else:
            self.conditional_gates.append(gate)
        step = len(self.conditional_gates) - 1
        logits = torch.full((1, LAYERS, REFS, VIDEO_TOKENS), -10.0)
        logits[:, :, 0, step % VIDEO_TOKENS] = 10.0
        return DiTOutput(torch.zeros_like(latents), logits)


def test_mask_cache_gates_step_k_with_masks_of_step_k_minus_1():
    cache = MaskCache(gate_start_step=10)
    assert cache.gate(0)[0].mode == "global"
    cache.update(11, torch.tensor([[[0.7, 0.2]]]))
    gate, source = cache.gate(12)
    assert gate.mode == "masks" and source == 11
    torch.testing.assert_close(gate.masks, torch.tensor([[[1.0, 0.0]]]))
    assert cache.gate(9)[0].mode == "global"  # never before the start step


def test_sampler_follows_algorithm_1_over_50_steps():
    model = RecordingModel()
    geometry = vae_geometry(micro_config().vae, (1, 2, 2))
    companions = Companions(vae=PatchVAE(4, 4), text_encoder=None, featurizer=None, geometry=geometry)
    conditions = Conditions(
        text=torch.zeros(1, 1, 32), null_text=torch.zeros(1, 1, 32), ref_latents=torch.zeros(1, REFS, 192, 1, 4, 4),
        audio=torch.zeros(1, REFS, 2, 4, 32), audio_muted=torch.zeros(1, 2, 4, 32),
        audio_mix=np.zeros(16000, np.float32), video_frames=8,
    )
    sample = SampleConfig(steps=50, gate_start_step=10, window_frames=8, overlap_frames=1)
    result = Sampler(model, companions, micro_config(), torch.device("cpu")).generate(conditions, (32, 64), sample)

    gates = model.conditional_gates
    assert len(gates) == 50 and all(g.mode == "muted" for g in model.unconditional_gates)
    assert all(g.mode == "global" for g in gates[:10])  # gating off for the first 10 of 50 steps
    for step in range(10, 50):
        expected = torch.zeros(1, REFS, VIDEO_TOKENS)
        expected[0, 0, (step - 1) % VIDEO_TOKENS] = 1.0  # the masks predicted one step earlier
        assert gates[step].mode == "masks"
        torch.testing.assert_close(gates[step].masks, expected)
    assert result.traces[0].gate_source == [-1] * 10 + list(range(9, 49))
    assert np.stack(result.traces[0].layer_masks).shape == (50, LAYERS, REFS, 2, 4, 8)


def test_request_line_format(tmp_path):
    request = parse_request_line("Two people talk @@ a.png, b.png @@a.wav,b.wav\n")
    assert request.prompt == "Two people talk"
    assert request.images == ["a.png", "b.png"] and request.audios == ["a.wav", "b.wav"]
    with pytest.raises(ValueError):
        parse_request_line("prompt@@a.png,b.png@@a.wav")
    with pytest.raises(ValueError):
        parse_request_line("prompt with no parts")
    listing = tmp_path / "requests.txt"
    listing.write_text("# a comment\n\none@@x.png@@x.wav\ntwo@@y.png,z.png@@y.wav,z.wav\n")
    assert [(r.prompt, len(r.images)) for r in read_requests(listing)] == [("one", 1), ("two", 2)]


def _write_inputs(folder):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        image, audio = folder / f"ref{i}.png", folder / f"voice{i}.wav"
        cv2.imwrite(str(image), rng.integers(0, 255, (40, 24, 3), dtype=np.uint8))
        tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * np.arange(10240) / 16000)
        audio.write_bytes(wav_bytes(tone.astype(np.float32), 16000))
        paths.append((image, audio))
    return paths


def test_sample_cli_writes_mp4_with_audio_and_mask_trace(tmp_path):
    (ref0, voice0), (ref1, voice1) = _write_inputs(tmp_path)
    overrides = [arg for item in MICRO_DATA for arg in ("--set", item)]
    out = tmp_path / "out" / "talk.mp4"
    main(["--config", str(TINY_CONFIG), *overrides, "--prompt", "two figures", "--ref", str(ref0), "--audio", str(voice0),
          "--ref", str(ref1), "--audio", str(voice1), "--out", str(out), "--size", "32", "64"])

    with av.open(str(out)) as container:
        kinds = {stream.type: stream.codec_context.name for stream in container.streams}
        frames = [frame for frame in container.decode(video=0)]
    with av.open(str(out)) as container:
        sound = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    assert kinds == {"video": "h264", "audio": "aac"}
    assert abs(len(sound) - 10240) <= 1024 and np.abs(sound).max() > 0.1  # the summed tracks, 0.64 s
    assert len(frames) == 16 and (frames[0].height, frames[0].width) == (32, 64)  # 0.64 s at 25 fps
    trace = np.load(out.with_suffix(".masks.npz"))
    assert list(trace["window_starts"]) == [0, 1, 2]  # 4 latent frames, windows of 2 overlapping by 1
    assert trace["layer_masks_0"].shape == (3, 4, 2, 2, 4, 8)  # steps, layers, identities, T_lat, Ht, Wt
    assert list(trace["gate_source_0"]) == [-1, 0, 1]

    listing = tmp_path / "requests.txt"
    listing.write_text(f"two figures@@{ref0},{ref1}@@{voice0},{voice1}\n")
    outputs = main(["--config", str(TINY_CONFIG), *overrides, "--input-file", str(listing), "--out-dir", str(tmp_path / "batch"), "--size", "32", "64"])
    assert [p.name for p in outputs] == ["sample_0000.mp4"] and outputs[0].exists()
