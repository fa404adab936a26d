"""Generate a multi-person talking video from a prompt and N (reference image, audio) pairs.

    python -m training.sample --config configs/model_tiny.yaml --checkpoint runs/tiny/ckpt-00002000 \\
        --prompt "two people talk" --ref a.png --audio a.wav --ref b.png --audio b.wav --out out.mp4
    python -m training.sample --config ... --checkpoint ... --input-file requests.txt --out-dir outputs/
    python -m training.sample --config ... --checkpoint ... --testset 'test/shard-*.tar' --out-dir generated/

With --testset, one video per test sample, from its caption, full-body references and per-identity
audio (the clip's audio where that identity speaks), as long as the clip: <key>.mp4 and
<key>.masks.npz, which python -m training.evaluate scores against the same shards.

A request line is `prompt@@image_1,image_2@@audio_1,audio_2` (image i pairs with audio i, each audio is
that identity's own track). Writes <out>.mp4 (H.264 + AAC of the summed tracks) and <out>.masks.npz, the
mask trace: per window, step, predictor layer and identity, the predicted masks (uint8, probability
* 255), the final masks used by the cache, and which step's masks gated each step (-1: no gating).

Sampling follows the paper's Algorithm 1: classifier-free guidance with one scale for text and audio
(the unconditional branch has no text and muted audio everywhere); the masks predicted at step k gate
the audio at step k + 1 (a mask cache) on the conditional branch, with gating off for the first
gate_start_step steps. Videos longer than one window are made in sliding windows: the last
overlap_frames latent frames of window w are the first frames of window w + 1, held on their known
noising trajectory while the rest is denoised.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from training.audio import SAMPLE_RATE, features_at_frames
from training.batch import encode_references, group_audio
from training.build import Companions, build_companions, build_model
from training.checkpointing import load_model_weights
from training.config import Config, SampleConfig, load_config
from training.data import fit_reference, identity_audio, is_trainable, read_clips
from training.dit import AudioGate, InterActDiT, final_mask
from training.flow import TIMESTEP_SCALE, add_noise, euler_step, inference_sigmas
from training.media import read_wav, write_mp4


@dataclass
class SampleRequest:
    prompt: str
    images: list[str]
    audios: list[str]


def parse_request_line(line: str) -> SampleRequest:
    """`prompt@@img1,img2@@aud1,aud2` -> SampleRequest; images and audios pair up in order."""
    parts = line.strip().split("@@")
    if len(parts) != 3:
        raise ValueError(f"expected prompt@@images@@audios, got {line!r}")
    prompt, images, audios = (part.strip() for part in parts)
    images = [p.strip() for p in images.split(",") if p.strip()]
    audios = [p.strip() for p in audios.split(",") if p.strip()]
    if not images or len(images) != len(audios):
        raise ValueError(f"need one audio per reference image, got {len(images)} images and {len(audios)} audios")
    return SampleRequest(prompt, images, audios)


def read_requests(path: str | Path) -> list[SampleRequest]:
    """One request per non-empty line; lines starting with # are comments."""
    lines = Path(path).read_text().splitlines()
    return [parse_request_line(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


class MaskCache:
    """Which masks gate the audio at each denoising step (Algorithm 1).

    Steps before gate_start_step, and any step before a mask exists, get global audio. From then on,
    step k is gated by the final masks predicted at step k - 1, binarised at 0.5.
    """

    def __init__(self, gate_start_step: int):
        self.gate_start_step = gate_start_step
        self.masks: torch.Tensor | None = None
        self.source_step = -1

    def gate(self, step: int) -> tuple[AudioGate, int]:
        """(gate for this step, the step whose masks it uses or -1)."""
        if step < self.gate_start_step or self.masks is None:
            return AudioGate("global"), -1
        return AudioGate("masks", (self.masks > 0.5).float()), self.source_step

    def update(self, step: int, masks: torch.Tensor) -> None:
        self.masks, self.source_step = masks, step


@dataclass
class Conditions:
    """Everything a generation is conditioned on, for the whole video, on the model's device."""

    text: torch.Tensor  # [1, L, text_dim]
    null_text: torch.Tensor
    ref_latents: torch.Tensor  # [1, N, C, 1, h, w]
    audio: torch.Tensor  # [1, N, T_lat, G, C]
    audio_muted: torch.Tensor  # [1, T_lat, G, C]
    audio_mix: np.ndarray  # float32 [S] for the output file
    video_frames: int


@dataclass
class WindowTrace:
    layer_masks: list[np.ndarray] = field(default_factory=list)  # per step [layers, N, T_lat, Ht, Wt] uint8
    final_masks: list[np.ndarray] = field(default_factory=list)  # per step [N, T_lat, Ht, Wt] uint8
    gate_source: list[int] = field(default_factory=list)

    def record(self, layer_logits: torch.Tensor, final: torch.Tensor, source: int, grid: tuple[int, int]) -> None:
        self.layer_masks.append(_to_uint8(torch.sigmoid(layer_logits.float()), grid))
        self.final_masks.append(_to_uint8(final, grid))
        self.gate_source.append(source)


@dataclass
class SampleResult:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray
    traces: list[WindowTrace]
    sigmas: np.ndarray
    window_starts: list[int]

    def save_trace(self, path: str | Path) -> None:
        arrays = {"sigmas": self.sigmas, "window_starts": np.array(self.window_starts, np.int32)}
        for w, trace in enumerate(self.traces):
            arrays[f"layer_masks_{w}"] = np.stack(trace.layer_masks)
            arrays[f"final_masks_{w}"] = np.stack(trace.final_masks)
            arrays[f"gate_source_{w}"] = np.array(trace.gate_source, np.int32)
        np.savez_compressed(path, **arrays)


def _to_uint8(probabilities: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """[..., Lv] probabilities -> uint8 [..., T_lat, Ht, Wt]."""
    return (probabilities.float().clamp(0, 1) * 255).round().byte().unflatten(-1, (-1, *grid)).cpu().numpy()


class Sampler:
    def __init__(self, model: InterActDiT, companions: Companions, config: Config, device: torch.device):
        self.model, self.companions, self.config, self.device = model.eval(), companions, config, device

    @torch.no_grad()
    def generate(self, conditions: Conditions, size: tuple[int, int], sample: SampleConfig, seed: int = 0) -> SampleResult:
        geometry = self.companions.geometry
        total = geometry.latent_frames(conditions.video_frames)
        height, width = size
        generator = torch.Generator().manual_seed(seed)
        shape = (1, self.model.config.in_dim, total, height // geometry.spatial_stride, width // geometry.spatial_stride)
        latents = torch.zeros(shape, device=self.device)
        traces, starts, start = [], [], 0
        while True:
            end = min(start + sample.window_frames, total)
            head = latents[:, :, start : start + sample.overlap_frames] if start > 0 else None
            window, trace = self._denoise(conditions, start, end, head, shape, sample, generator)
            latents[:, :, start:end] = window
            traces.append(trace)
            starts.append(start)
            if end == total:
                break
            start = end - sample.overlap_frames
        video = self.companions.vae.decode(latents)[0].transpose(0, 1)  # [T, 3, H, W]
        frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        sigmas = inference_sigmas(sample.steps, sample.shift).numpy()
        return SampleResult(frames, conditions.audio_mix, traces, sigmas, starts)

    def _denoise(self, cond: Conditions, start: int, end: int, head, shape, sample: SampleConfig, generator):
        """One window of latent frames [start, end); `head` holds frames reused from the last window."""
        latents = torch.randn((*shape[:2], end - start, *shape[3:]), generator=generator).to(self.device)
        head_noise = latents[:, :, : head.shape[2]].clone() if head is not None else None
        sigmas = inference_sigmas(sample.steps, sample.shift).tolist()
        cache, trace = MaskCache(sample.gate_start_step), WindowTrace()
        grid = (shape[3] // self.model.config.patch_size[1], shape[4] // self.model.config.patch_size[2])
        for step in range(sample.steps):
            if head is not None:  # reused frames follow their known trajectory
                latents[:, :, : head.shape[2]] = add_noise(head, head_noise, torch.tensor([sigmas[step]]))
            gate, source = self._gate(cache, step, sample)
            velocity, mask_logits = self._guided_velocity(latents, sigmas[step], cond, start, end, gate, sample.cfg_scale)
            masks = final_mask(mask_logits, self.model.config.mask_avg_last)
            cache.update(step, masks)
            trace.record(mask_logits[0], masks[0], source, grid)
            latents = euler_step(latents, velocity, sigmas[step], sigmas[step + 1])
        if head is not None:
            latents[:, :, : head.shape[2]] = head
        return latents, trace

    def _guided_velocity(self, latents, sigma: float, cond: Conditions, start: int, end: int, gate: AudioGate, scale: float):
        """CFG with one scale for text and audio: the unconditional branch has no text and muted audio.
        Returns the guided velocity and the conditional branch's mask logits."""
        timestep = torch.full((1,), sigma * TIMESTEP_SCALE, device=self.device)
        audio, muted = cond.audio[:, :, start:end], cond.audio_muted[:, start:end]
        with self._autocast():
            conditional = self.model(latents, timestep, cond.text, cond.ref_latents, audio, muted, gate)
            unconditional = self.model(latents, timestep, cond.null_text, cond.ref_latents, audio, muted, AudioGate("muted"))
        uncond = unconditional.velocity.float()
        return uncond + scale * (conditional.velocity.float() - uncond), conditional.mask_logits

    def _autocast(self):
        enabled = self.device.type == "cuda" and self.config.train.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @staticmethod
    def _gate(cache: MaskCache, step: int, sample: SampleConfig) -> tuple[AudioGate, int]:
        if sample.gate_mode == "cache":
            return cache.gate(step)
        if sample.gate_mode == "current" and step >= sample.gate_start_step:
            return AudioGate("current"), step
        return AudioGate("global"), -1


def conditions_from_arrays(
    companions: Companions, config: Config, device, prompt: str, refs: list[np.ndarray], tracks: list[np.ndarray], video_frames: int | None = None
) -> Conditions:
    """refs: RGB uint8 images; tracks: each identity's own 16 kHz audio. The video lasts as long as the
    longest track unless video_frames is given."""
    geometry, fps = companions.geometry, config.data.fps
    length = max(len(t) for t in tracks)
    tracks = [np.pad(t, (0, length - len(t))) for t in tracks]
    if video_frames is None:
        video_frames = _largest_valid_frames(geometry, int(length / SAMPLE_RATE * fps))
    times = np.arange(video_frames) / fps
    featurizer = companions.featurizer
    audio = np.stack([features_at_frames(featurizer.features(t), times) for t in tracks])
    muted = features_at_frames(featurizer.features(np.zeros(length, np.float32)), times)
    ref_pixels = np.stack([fit_reference(r, tuple(config.data.ref_size)) for r in refs])
    text = companions.text_encoder([prompt, ""]).to(device)
    return Conditions(
        text=text[:1],
        null_text=text[1:],
        ref_latents=encode_references(companions.vae, torch.from_numpy(ref_pixels)[None].to(device)),
        audio=group_audio(torch.from_numpy(audio)[None].to(device), geometry),
        audio_muted=group_audio(torch.from_numpy(muted)[None].to(device), geometry),
        audio_mix=np.clip(np.sum(tracks, axis=0), -1, 1).astype(np.float32),
        video_frames=video_frames,
    )


def _largest_valid_frames(geometry, frames: int) -> int:
    """The longest frame count <= frames that the VAE accepts."""
    stride = geometry.temporal_stride
    if geometry.causal_first_frame:
        return 1 + max(frames - 1, 0) // stride * stride
    return max(frames // stride, 1) * stride


def conditions_from_request(request: SampleRequest, companions: Companions, config: Config, device) -> Conditions:
    refs = [cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for path in request.images]
    tracks = [read_wav(Path(path).read_bytes(), SAMPLE_RATE) for path in request.audios]
    return conditions_from_arrays(companions, config, device, request.prompt, refs, tracks)


def load_sampler(config: Config, checkpoint: str | None, device: torch.device) -> Sampler:
    model = build_model(config)
    if checkpoint:
        load_model_weights(checkpoint, model)
    companions = build_companions(config, device)
    return Sampler(model.to(device), companions, config, device)


def write_result(result: SampleResult, out: Path, fps: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(out, result.frames, fps, result.audio[: int(len(result.frames) / fps * SAMPLE_RATE)], SAMPLE_RATE)
    result.save_trace(out.with_suffix(".masks.npz"))


def generate_testset(sampler: Sampler, config: Config, args) -> list[Path]:
    """<out_dir>/<key>.mp4 for each test sample with references and audio."""
    outputs = []
    size = tuple(args.size or config.data.resolutions[0])
    for clip in read_clips(args.testset):
        if args.limit is not None and len(outputs) >= args.limit:
            break
        if not is_trainable(clip):
            print(f"skipped {clip.key}: it lacks references, masks, audio or speaking times")
            continue
        tracks = [identity_audio(clip, i) for i in range(clip.num_identities)]
        frames = _largest_valid_frames(sampler.companions.geometry, int(len(clip.frames) / clip.fps * config.data.fps))
        conditions = conditions_from_arrays(sampler.companions, config, sampler.device, clip.caption, clip.refs, tracks, frames)
        out = Path(args.out_dir) / f"{clip.key}.mp4"
        write_result(sampler.generate(conditions, size, config.sample, args.seed), out, config.data.fps)
        outputs.append(out)
        print(f"[{len(outputs)}] wrote {out}")
    return outputs


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--checkpoint", help="training checkpoint folder or model.safetensors")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--ref", action="append", default=[], help="reference image of identity i (repeat)")
    parser.add_argument("--audio", action="append", default=[], help="audio of identity i (repeat, same order)")
    parser.add_argument("--input-file", help="request lines prompt@@images@@audios")
    parser.add_argument("--testset", help="shards pattern: one video per test sample, named by its key")
    parser.add_argument("--limit", type=int, help="--testset: at most this many samples")
    parser.add_argument("--out", default="sample.mp4", help="output file for a single request")
    parser.add_argument("--out-dir", default="samples", help="output folder for --input-file")
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="default: the first data resolution")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.testset:
        return generate_testset(load_sampler(config, args.checkpoint, device), config, args)
    if args.input_file:
        requests = read_requests(args.input_file)
        outputs = [Path(args.out_dir) / f"sample_{i:04d}.mp4" for i in range(len(requests))]
    else:
        requests = [SampleRequest(args.prompt, args.ref, args.audio)]
        outputs = [Path(args.out)]
        if not args.ref or len(args.ref) != len(args.audio):
            parser.error("give one --audio per --ref")
    sampler = load_sampler(config, args.checkpoint, device)
    size = tuple(args.size or config.data.resolutions[0])
    for request, out in zip(requests, outputs):
        result = sampler.generate(conditions_from_request(request, sampler.companions, config, device), size, config.sample, args.seed)
        write_result(result, out, config.data.fps)
        print(f"wrote {out} ({len(result.frames)} frames) and {out.with_suffix('.masks.npz')}")
    return outputs


if __name__ == "__main__":
    main()
