"""Video autoencoders: the Wan2.1 3D causal VAE (released key layout) and a lossless pixel patch VAE.

Like the Wan2.1 code, encoding runs over chunks of 1, 4, 4, ... frames and decoding over chunks of
latent frames, each causal conv keeping the last frames of its input between chunks, so memory does
not grow with clip length. The result does not depend on the chunk size: a causal 3x3x3 conv sees the
two frames before it either way, the temporal downsampler passes frame 0 through and convolves
(stride 2) from frame 0 on, and the temporal upsampler leaves frame 0 alone and applies a causal conv,
zero history, to the frames after it.

Latents are normalised with the per-channel mean and std the Wan2.1 release uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import VAEConfig
from training.geometry import TokenGeometry
from training.loaders import load_wan_vae

WAN_LATENT_MEAN = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]
WAN_LATENT_STD = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
]


class CausalConv3d(nn.Conv3d):
    """Conv3d padded symmetrically in space and, in time, by the input frames of earlier chunks (zeros
    before the first chunk of a stream)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.spatial_padding = (pw, pw, ph, ph)
        self.history_frames = 2 * pt
        self.history: torch.Tensor | None = None

    def reset_stream(self) -> None:
        self.history = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.history_frames:
            past = self.history if self.history is not None else x.new_zeros(*x.shape[:2], self.history_frames, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            self.history = x[:, :, -self.history_frames :]
        return super().forward(F.pad(x, self.spatial_padding))


class ChannelRMSNorm(nn.Module):
    """RMS norm over channels (dim 1); `gamma` is [C, 1, 1, 1] for videos and [C, 1, 1] for images."""

    def __init__(self, channels: int, images: bool):
        super().__init__()
        self.scale = channels**0.5
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1) if images else torch.ones(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # Index 5 held dropout in the release; an Identity keeps the checkpoint's layer numbering.
        self.residual = nn.Sequential(
            ChannelRMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            ChannelRMSNorm(out_dim, images=False), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.residual(x)


class FrameAttention(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = ChannelRMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = x.shape
        images = x.transpose(1, 2).flatten(0, 1)
        q, k, v = self.to_qkv(self.norm(images)).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        out = self.proj(out.transpose(1, 2).reshape(-1, channels, height, width))
        return x + out.unflatten(0, (batch, frames)).transpose(1, 2)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    batch = x.shape[0]
    out = module(x.transpose(1, 2).flatten(0, 1))
    return out.unflatten(0, (batch, -1)).transpose(1, 2)


class Resample(nn.Module):
    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"), nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=(2, 2)))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))
        self.reset_stream()

    def reset_stream(self) -> None:
        self.started = False  # whether frame 0 of the stream went by
        self.last_frame: torch.Tensor | None = None  # downsampler: last input frame of the previous chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._double_frames(x)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            x = self._halve_frames(x)
        self.started = True
        return x

    def _double_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Frame 0 stays one frame; every later frame becomes two."""
        head, rest = (x[:, :, :1], x[:, :, 1:]) if not self.started else (x[:, :, :0], x)
        if rest.shape[2]:
            doubled = self.time_conv(rest)  # [B, 2C, T, H, W]
            batch, channels2, frames, height, width = doubled.shape
            doubled = doubled.reshape(batch, 2, channels2 // 2, frames, height, width)
            rest = torch.stack([doubled[:, 0], doubled[:, 1]], dim=3).reshape(batch, channels2 // 2, 2 * frames, height, width)
        return torch.cat([head, rest], dim=2)

    def _halve_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Frame 0 passes; then one frame per two, convolved (stride 2) from frame 0 on."""
        head = x[:, :, :1] if not self.started else x[:, :, :0]
        joined = x if self.last_frame is None else torch.cat([self.last_frame, x], dim=2)
        self.last_frame = x[:, :, -1:]
        body = self.time_conv(joined) if joined.shape[2] >= 3 else joined[:, :, :0]
        return torch.cat([head, body], dim=2)


class Encoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temporal_downsample=(False, True, True)):
        super().__init__()
        dims = [dim * u for u in (1, *dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers = []
        for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if level != len(dim_mult) - 1:
                layers.append(Resample(out_dim, "downsample3d" if temporal_downsample[level] else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.middle = nn.Sequential(ResidualBlock(dims[-1], dims[-1]), FrameAttention(dims[-1]), ResidualBlock(dims[-1], dims[-1]))
        self.head = nn.Sequential(ChannelRMSNorm(dims[-1], images=False), nn.SiLU(), CausalConv3d(dims[-1], z_dim, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.middle(self.downsamples(self.conv1(x))))


class Decoder3d(nn.Module):
    def __init__(self, dim: int, z_dim: int, dim_mult=(1, 2, 4, 4), num_res_blocks=2, temporal_upsample=(True, True, False)):
        super().__init__()
        dims = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), FrameAttention(dims[0]), ResidualBlock(dims[0], dims[0]))
        layers = []
        for level, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if level > 0:  # the upsampler before this level halved the channels
                in_dim //= 2
            for _ in range(num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if level != len(dim_mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if temporal_upsample[level] else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(ChannelRMSNorm(dims[-1], images=False), nn.SiLU(), CausalConv3d(dims[-1], 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.upsamples(self.middle(self.conv1(x))))


class WanVAE(nn.Module):
    """Wan2.1 VAE: stride 4x8x8, 16 latent channels; state-dict keys as in Wan2.1_VAE.pth."""

    z_dim = 16

    def __init__(self, base_dim: int = 96):
        super().__init__()
        self.encoder = Encoder3d(base_dim, self.z_dim * 2)
        self.conv1 = CausalConv3d(self.z_dim * 2, self.z_dim * 2, 1)
        self.conv2 = CausalConv3d(self.z_dim, self.z_dim, 1)
        self.decoder = Decoder3d(base_dim, self.z_dim)
        self.register_buffer("latent_mean", torch.tensor(WAN_LATENT_MEAN).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latent_std", torch.tensor(WAN_LATENT_STD).view(1, -1, 1, 1, 1), persistent=False)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, chunk_frames: int = 4) -> torch.Tensor:
        """video [B, 3, 1 + 4k, H, W] in [-1, 1] -> normalised latent mean [B, 16, 1 + k, H/8, W/8].

        Frame 0, then chunk_frames (a multiple of 4) frames at a time."""
        bounds = [0, 1, *range(1 + chunk_frames, video.shape[2], chunk_frames), video.shape[2]]
        encoded = self._stream(self.encoder, [video[:, :, a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
        mean, _ = self.conv1(encoded).chunk(2, dim=1)
        return (mean - self.latent_mean) / self.latent_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_frames: int = 1) -> torch.Tensor:
        """Latents [B, 16, T, h, w] -> video [B, 3, 1 + 4 (T - 1), 8h, 8w] in [-1, 1], chunk_frames latent
        frames at a time."""
        z = self.conv2(latents * self.latent_std + self.latent_mean)
        chunks = [z[:, :, a : a + chunk_frames] for a in range(0, z.shape[2], chunk_frames)]
        return self._stream(self.decoder, chunks).clamp(-1, 1)

    def _stream(self, network: nn.Module, chunks: list[torch.Tensor]) -> torch.Tensor:
        for module in network.modules():
            if hasattr(module, "reset_stream"):
                module.reset_stream()
        out = torch.cat([network(chunk) for chunk in chunks], dim=2)
        for module in network.modules():  # drop the cached frames
            if hasattr(module, "reset_stream"):
                module.reset_stream()
        return out

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> [B, 16, 1, H/8, W/8]: a one-frame video."""
        return self.encode(images[:, :, None])


class PatchVAE(nn.Module):
    """Lossless pixel-space "VAE": space-to-depth over (t, s, s) blocks, 3 t s^2 channels.

    For tests and the synthetic corpus, where no Wan2.1 weights exist: it has the VAE interface and a
    temporal stride, but nothing to load or train.
    """

    def __init__(self, temporal_stride: int, spatial_stride: int):
        super().__init__()
        self.temporal_stride = temporal_stride
        self.spatial_stride = spatial_stride

    @property
    def latent_channels(self) -> int:
        return 3 * self.temporal_stride * self.spatial_stride**2

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        t, s = self.temporal_stride, self.spatial_stride
        b, c, frames, height, width = video.shape
        x = video.reshape(b, c, frames // t, t, height // s, s, width // s, s)
        return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * t * s * s, frames // t, height // s, width // s)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        t, s = self.temporal_stride, self.spatial_stride
        b, _, frames, height, width = latents.shape
        x = latents.reshape(b, 3, t, s, s, frames, height, width)
        return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, 3, frames * t, height * s, width * s).clamp(-1, 1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """A still image repeated over one temporal block -> [B, C, 1, H/s, W/s]."""
        return self.encode(images[:, :, None].expand(-1, -1, self.temporal_stride, -1, -1))


def build_vae(config: VAEConfig) -> nn.Module:
    if config.kind == "patch":
        return PatchVAE(config.temporal_stride, config.spatial_stride)
    if config.kind == "wan":
        vae = WanVAE(config.wan_base_dim)
        if config.checkpoint:
            load_wan_vae(vae, config.checkpoint)
        return vae.eval().requires_grad_(False)
    raise ValueError(f"unknown vae kind {config.kind!r}")


def vae_geometry(config: VAEConfig, patch_size: tuple[int, int, int]) -> TokenGeometry:
    if config.kind == "wan":
        return TokenGeometry(4, 8, causal_first_frame=True, patch_size=tuple(patch_size))
    return TokenGeometry(config.temporal_stride, config.spatial_stride, causal_first_frame=False, patch_size=tuple(patch_size))


def latent_channels(config: VAEConfig) -> int:
    return WanVAE.z_dim if config.kind == "wan" else 3 * config.temporal_stride * config.spatial_stride**2
