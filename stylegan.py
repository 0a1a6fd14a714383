"""StyleGAN networks: "A Style-Based Generator Architecture for GANs" (Karras et al., 2018,
arXiv 1812.04948), matched to the official TensorFlow code (NVlabs/stylegan, networks_stylegan.py)
to the parameter: 26,219,627 trainable generator parameters at 1024x1024.

    G = Generator(StyleGANConfig(resolution=1024))
    img = G(torch.randn(4, 512), res=256, alpha=0.5, psi=0.7)    # [4, 3, 256, 256] in ~[-1, 1]
    logits = Discriminator(cfg)(img, alpha=0.5)                  # [4, 1]

Reading order: config, equalized-lr primitives, the layer epilogue (AdaIN), mapping network,
synthesis network, generator wrapper (truncation, style mixing, w_avg), discriminator, checkpoint
loading. The per-layer fused operations go through kernels.py (Triton, with PyTorch references).
"""
import functools
import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels

NOISE_MODES = ("random", "const", "none")


@dataclass
class StyleGANConfig:
    resolution: int = 1024        # final output resolution (power of two)
    num_channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8       # paper ablation: 0 = z (pixel-normalized) is used as w directly
    mapping_fmaps: int = 512
    mapping_lrmul: float = 0.01   # the mapping network learns 100x slower (official default)
    fmap_base: int = 8192         # nf(stage) = min(fmap_base / 2**stage, fmap_max)
    fmap_max: int = 512
    use_noise: bool = True        # paper ablation: no per-layer noise inputs at all
    truncation_cutoff: int = 8    # psi applies to ws[:, :cutoff] (coarse layers, 4x4..32x32)
    w_avg_beta: float = 0.995     # EMA of w during training, the centre of truncation
    mbstd_group_size: int = 4
    mbstd_features: int = 1

    def __post_init__(self):
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 4, got {self.resolution}")
        if self.mapping_layers == 0 and self.z_dim != self.w_dim:
            raise ValueError("mapping_layers=0 uses z as w, so z_dim must equal w_dim")

    @property
    def log2_res(self):
        return int(math.log2(self.resolution))

    @property
    def num_ws(self):
        return 2 * self.log2_res - 2  # two styled layers per resolution: 18 at 1024

    def nf(self, stage):
        return min(self.fmap_base // 2 ** stage, self.fmap_max)

    def to_dict(self):
        return asdict(self)


def to_uint8(img):
    """Generator output in [-1, 1] -> uint8, rounded down as the official code does."""
    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def check_res(res, cfg):
    if not isinstance(res, int) or res < 4 or res > cfg.resolution or res & (res - 1):
        raise ValueError(f"res must be a power of two between 4 and {cfg.resolution}, got {res!r}")
    return res


# ----------------------------------------------------------------------------------------------
# Equalized learning rate primitives (ProGAN section 4.1): weights are stored as N(0, 1/lrmul) and
# scaled at run time by gain / sqrt(fan_in) * lrmul, so Adam sees every weight at the same scale.

class EqualLinear(nn.Module):
    def __init__(self, in_features, out_features, gain=math.sqrt(2), lrmul=1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lrmul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.w_scale = gain / math.sqrt(in_features) * lrmul
        self.lrmul = lrmul

    def forward(self, x, act=False):
        x = F.linear(x, self.weight * self.w_scale)
        if act:  # leaky ReLU's sqrt(2) gain already lives in w_scale
            return kernels.bias_lrelu(x, self.bias * self.lrmul)
        return x + (self.bias * self.lrmul).to(x.dtype)


class EqualConv2d(nn.Module):
    """Conv with equalized lr. up=True: 2x upsample first; down=True: 2x downsample after.
    fused=True turns the resampling into one stride-2 (transposed) conv whose 4x4 kernel is the sum
    of the four shifted 3x3 kernels, as the official code does at 128x128 and above."""

    def __init__(self, in_channels, out_channels, kernel, gain=math.sqrt(2), up=False, down=False,
                 fused=False, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.w_scale = gain / math.sqrt(in_channels * kernel * kernel)
        self.up, self.down, self.fused = up, down, fused

    def conv(self, x):
        w = self.weight * self.w_scale
        if self.fused:
            w = F.pad(w, (1, 1, 1, 1))
            w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
            if self.up:  # no x0.25 in G: nearest upsampling copies, it does not average
                return F.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=1)
            return F.conv2d(x, w * 0.25, stride=2, padding=1)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, w, padding=w.shape[-1] // 2)
        if self.down:
            x = F.avg_pool2d(x, 2)
        return x

    def forward(self, x, act=False):
        x = self.conv(x)
        if act:
            return kernels.bias_lrelu(x, self.bias)
        return x + self.bias.to(x.dtype).view(1, -1, 1, 1)


@functools.lru_cache(maxsize=None)
def blur_kernel(device, dtype):  # cached: a fresh torch.tensor per call would copy (and sync) per layer
    f = torch.tensor([1.0, 2.0, 1.0], dtype=dtype)
    return ((f[:, None] * f[None, :]) / 16).to(device)


def blur(x):
    """[1, 2, 1] x [1, 2, 1] / 16 depthwise low-pass, zero 'same' padding (official blur2d)."""
    C = x.shape[1]
    return F.conv2d(x, blur_kernel(x.device, x.dtype).expand(C, 1, 3, 3), padding=1, groups=C)


def upscale2d(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downscale2d(x):
    return F.avg_pool2d(x, 2)


def pixel_norm(x, eps=1e-8):
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


# ----------------------------------------------------------------------------------------------
# Synthesis network g

class LayerEpilogue(nn.Module):
    """After every synthesis conv, in the official order: + noise * weight[c] (a fresh N(0, 1) map
    per layer, weight initialised to 0) -> + bias -> leaky ReLU -> instance norm -> style
    x * (ys + 1) + yb with (ys, yb) = A(w). One fused kernel: kernels.noise_adain."""

    def __init__(self, cfg, channels, res):
        super().__init__()
        self.noise_weight = nn.Parameter(torch.zeros(channels)) if cfg.use_noise else None
        if cfg.use_noise:  # fixed maps for noise_mode="const" (reproducible samples)
            self.register_buffer("noise_const", torch.randn(1, 1, res, res))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style = EqualLinear(cfg.w_dim, 2 * channels, gain=1.0)  # A in the paper

    def forward(self, x, w, noise_mode):
        N, C, H, W = x.shape
        noise = None
        if self.noise_weight is not None and noise_mode == "random":
            noise = torch.randn(N, 1, H, W, device=x.device, dtype=x.dtype)
        elif self.noise_weight is not None and noise_mode == "const":
            noise = self.noise_const.to(x.dtype).expand(N, -1, -1, -1)
        # The style is tiny ([N, 2C]); keep it in fp32 so that ys + 1 does not round in bf16.
        with torch.autocast(x.device.type, enabled=False):
            ys, yb = self.style(w.float()).chunk(2, dim=1)
        return kernels.noise_adain(x, noise, self.noise_weight, self.bias, ys + 1, yb)


class SynthesisBlock(nn.Module):
    """One resolution: [const | upsample-conv 3x3 + blur] -> epilogue -> conv 3x3 -> epilogue,
    plus the ToRGB used when this is the output resolution."""

    def __init__(self, cfg, res):
        super().__init__()
        stage = int(math.log2(res))
        out_ch = cfg.nf(stage - 1)
        if res == 4:
            self.const = nn.Parameter(torch.ones(1, out_ch, 4, 4))  # official init: ones
        else:
            self.conv0 = EqualConv2d(cfg.nf(stage - 2), out_ch, 3, up=True, fused=res >= 128,
                                     bias=False)  # the biases of synthesis convs are the epilogue's
        self.epi0 = LayerEpilogue(cfg, out_ch, res)
        self.conv1 = EqualConv2d(out_ch, out_ch, 3, bias=False)
        self.epi1 = LayerEpilogue(cfg, out_ch, res)
        self.torgb = EqualConv2d(out_ch, cfg.num_channels, 1, gain=1.0)
        self.res = res

    def forward(self, x, w0, w1, noise_mode):
        if self.res == 4:
            x = self.const.expand(w0.shape[0], -1, -1, -1)
        else:
            x = blur(self.conv0.conv(x))
        x = self.epi0(x, w0, noise_mode)
        return self.epi1(self.conv1.conv(x), w1, noise_mode)


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList([SynthesisBlock(cfg, 2 ** s) for s in range(2, cfg.log2_res + 1)])

    def forward(self, ws, res, alpha=1.0, noise_mode="random"):
        """ws [N, num_ws, w_dim] -> images [N, C, res, res]. While res fades in (alpha < 1) the
        output is lerp(upsample(rgb of res/2), rgb of res, alpha), as in ProGAN."""
        n = int(math.log2(res)) - 1  # blocks in use
        x = x_prev = None
        for i, block in enumerate(self.blocks[:n]):
            x_prev = x
            x = block(x, ws[:, 2 * i], ws[:, 2 * i + 1], noise_mode)
        rgb = self.blocks[n - 1].torgb(x)
        if alpha < 1 and n > 1:
            rgb_prev = upscale2d(self.blocks[n - 2].torgb(x_prev))
            rgb = torch.lerp(rgb_prev, rgb, max(float(alpha), 0.0))
        return rgb


# ----------------------------------------------------------------------------------------------
# Mapping network f and the generator wrapper

class MappingNetwork(nn.Module):
    """z -> pixel norm -> 8 x (dense 512 + leaky ReLU), lrmul 0.01 -> w."""

    def __init__(self, cfg):
        super().__init__()
        dims = [cfg.z_dim] + [cfg.mapping_fmaps] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        self.layers = nn.ModuleList([EqualLinear(dims[i], dims[i + 1], lrmul=cfg.mapping_lrmul)
                                     for i in range(cfg.mapping_layers)])

    def forward(self, z):
        x = pixel_norm(z)
        for layer in self.layers:
            x = layer(x, act=True)
        return x


class Generator(nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg or StyleGANConfig()
        self.mapping = MappingNetwork(self.cfg)
        self.synthesis = SynthesisNetwork(self.cfg)
        self.register_buffer("w_avg", torch.zeros(self.cfg.w_dim))

    def map(self, z, psi=1.0, track_w_avg=True):
        """z [N, z_dim] -> ws [N, num_ws, w_dim], truncated towards w_avg in the first
        truncation_cutoff layers: lerp(w_avg, w, psi). In training, w_avg follows w's EMA."""
        if z.ndim != 2 or z.shape[1] != self.cfg.z_dim:
            raise ValueError(f"z must have shape [N, {self.cfg.z_dim}], got {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):  # w is tiny; fp32 keeps lrmul 0.01 exact
            w = self.mapping(z.float())
        if self.training and track_w_avg:  # the centre of W for truncation (official dlatent_avg_beta)
            with torch.no_grad():
                self.w_avg.copy_(w.float().mean(0).lerp(self.w_avg, self.cfg.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.cfg.num_ws, 1)
        return self.truncate(ws, psi)

    def truncate(self, ws, psi):
        if psi == 1:
            return ws
        cut = self.cfg.truncation_cutoff
        ws = ws.clone()
        ws[:, :cut] = self.w_avg.to(ws.dtype).lerp(ws[:, :cut], psi)
        return ws

    def forward(self, z, res=None, alpha=1.0, psi=1.0, mixing=0.0, noise_mode="random"):
        """z [N, z_dim] -> images [N, C, res, res]. mixing: probability that a second latent takes
        over from a crossover layer drawn uniformly in [1, layers in use) (paper section 3.1)."""
        res = check_res(self.cfg.resolution if res is None else res, self.cfg)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = self.map(z)
        num_layers = 2 * int(math.log2(res)) - 2
        if mixing > 0 and num_layers > 1 and torch.rand(()) < mixing:
            cutoff = int(torch.randint(1, num_layers, ()))
            # the second latent does not move w_avg, as in the official G_style
            ws = mix_styles(ws, self.map(torch.randn_like(z), track_w_avg=False), cutoff)
        ws = self.truncate(ws, psi)  # after mixing, as the official G_style does
        return self.synthesis(ws, res, alpha, noise_mode)


def mix_styles(ws1, ws2, cutoff):
    """Layers [0, cutoff) from ws1, layers [cutoff, num_ws) from ws2."""
    ws = ws1.clone()
    ws[:, cutoff:] = ws2[:, cutoff:]
    return ws


# ----------------------------------------------------------------------------------------------
# Discriminator

def minibatch_stddev(x, group_size=4, num_features=1):
    """ProGAN section 3: the stddev of each feature over a group of samples, averaged to
    num_features numbers per group and appended as constant maps. Computed in fp32.
    The official code requires N % group_size == 0; here the group shrinks to a divisor of N."""
    N, C, H, W = x.shape
    G = min(group_size, N)
    while N % G:
        G -= 1
    y = x.float().reshape(G, -1, num_features, C // num_features, H, W)  # [G, M, n, c, H, W]
    y = (y - y.mean(dim=0)).square().mean(dim=0)                          # variance over group
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))                             # [M, n]
    y = y.reshape(-1, num_features, 1, 1).repeat(G, 1, H, W)              # [N, n, H, W]
    return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorBlock(nn.Module):
    """conv 3x3 -> lrelu -> blur -> downsample-conv 3x3 -> lrelu (fused at inputs >= 128)."""

    def __init__(self, cfg, res):
        super().__init__()
        stage = int(math.log2(res))
        self.conv0 = EqualConv2d(cfg.nf(stage - 1), cfg.nf(stage - 1), 3)
        self.conv1 = EqualConv2d(cfg.nf(stage - 1), cfg.nf(stage - 2), 3, down=True, fused=res >= 128)

    def forward(self, x):
        x = self.conv0(x, act=True)
        return self.conv1(blur(x), act=True)


class Discriminator(nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg = cfg or StyleGANConfig()
        stages = range(2, cfg.log2_res + 1)
        self.fromrgb = nn.ModuleList([EqualConv2d(cfg.num_channels, cfg.nf(s - 1), 1) for s in stages])
        self.blocks = nn.ModuleList([DiscriminatorBlock(cfg, 2 ** s) for s in stages if s > 2])
        self.conv = EqualConv2d(cfg.nf(1) + cfg.mbstd_features, cfg.nf(1), 3)
        self.dense0 = EqualLinear(cfg.nf(1) * 16, cfg.nf(0))
        self.dense1 = EqualLinear(cfg.nf(0), 1, gain=1.0)

    def forward(self, img, alpha=1.0):
        """img [N, C, res, res] -> logits [N, 1]. While res fades in (alpha < 1) the features of
        the new top block are blended with FromRGB of the 2x downsampled image."""
        if img.ndim != 4 or img.shape[1] != self.cfg.num_channels or img.shape[2] != img.shape[3]:
            raise ValueError(f"D expects images [N, {self.cfg.num_channels}, res, res], "
                             f"got {tuple(img.shape)}")
        n = int(math.log2(check_res(img.shape[2], self.cfg))) - 2  # blocks above 4x4
        x = self.fromrgb[n](img, act=True)
        for i in range(n - 1, -1, -1):
            x = self.blocks[i](x)
            if i == n - 1 and alpha < 1:
                y = self.fromrgb[n - 1](downscale2d(img), act=True)
                x = torch.lerp(y, x, max(float(alpha), 0.0))
        x = minibatch_stddev(x, self.cfg.mbstd_group_size, self.cfg.mbstd_features)
        x = self.conv(x, act=True)
        x = self.dense0(x.flatten(1), act=True)
        return self.dense1(x)


# ----------------------------------------------------------------------------------------------
# Checkpoints (written by train.py): the config travels with the weights.

def load_generator(path, which="G_ema", device="cpu"):
    """Rebuild a generator from a train.py checkpoint alone. Returns (G, info) where info holds
    the resolution and alpha the run had reached and the images shown."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable torch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or which not in ckpt:
        raise ValueError(f"{path} is not a stylegan train.py checkpoint (no 'config' or '{which}')")
    G = Generator(StyleGANConfig(**ckpt["config"])).to(device)
    G.load_state_dict(ckpt[which])
    G.eval().requires_grad_(False)
    info = {k: ckpt.get(k) for k in ("res", "alpha", "cur_nimg")}
    info["res"] = info["res"] or G.cfg.resolution
    info["alpha"] = 1.0 if info["alpha"] is None else info["alpha"]
    return G, info
