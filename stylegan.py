"""StyleGAN networks: "A Style-Based Generator Architecture for GANs" (Karras et al., 2018,
arXiv 1812.04948), matched to the official TensorFlow code (NVlabs/stylegan, networks_stylegan.py)
to the parameter: 26,219,627 trainable generator parameters at 1024x1024.

    G = Generator(StyleGANConfig(resolution=1024))
    img = G(torch.randn(4, 512), res=256, alpha=0.5, psi=0.7)    # [4, 3, 256, 256] in ~[-1, 1]
    logits = Discriminator(cfg)(img, alpha=0.5)                  # [4, 1]

Reading order: config (and the paper's Tables 1, 2, 4 by name: PAPER_CONFIGS), equalized-lr
primitives, mapping network, synthesis network (its layer epilogue: AdaIN), generator wrapper
(truncation, style mixing, w_avg), discriminator, NVIDIA's pretrained pickles (load_official,
save_official: no TensorFlow, nothing executed), checkpoint loading (train.py's files, or NVIDIA's).
The per-layer fused operations go through kernels.py (Triton, with PyTorch references).
"""
import itertools
import math
import os
import pickle
from dataclasses import asdict, dataclass

import numpy as np
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
    use_styles: bool = True       # False: no AdaIN styles; w enters through the input layer only
    const_input_layer: bool = True  # False: the traditional input, a dense layer w -> 4x4 (Table 1 B, C)
    use_pixel_norm: bool = False  # pixel norm after each layer's leaky ReLU (ProGAN's G, Table 1 B)
    use_instance_norm: bool = True  # instance norm before the style (AdaIN)
    truncation_cutoff: int = 8    # psi applies to ws[:, :cutoff] (coarse layers, 4x4..32x32); 0 = never
    w_avg_beta: float = 0.995     # EMA of w during training, the centre of truncation
    mbstd_group_size: int = 4     # minibatch stddev over groups of 4; 0 or 1 = no stddev layer at all
    mbstd_features: int = 1

    def __post_init__(self):
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 4, got {self.resolution}")
        if self.mapping_layers == 0 and self.z_dim != self.w_dim:
            raise ValueError("mapping_layers=0 uses z as w, so z_dim must equal w_dim")
        if self.mbstd_group_size < 0 or (self.mbstd_group_size > 1 and self.mbstd_features < 1):
            raise ValueError(f"minibatch stddev needs mbstd_group_size >= 0 and, when on (> 1), mbstd_features "
                             f">= 1; got {self.mbstd_group_size} and {self.mbstd_features}")
        if not self.use_styles and self.const_input_layer:
            raise ValueError("use_styles=False with const_input_layer=True would ignore the latent: "
                             "the traditional generator needs const_input_layer=False")

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


# The paper's experiments by name, as the official train.py lists them (its "Table 1/2/4" option
# lines): StyleGANConfig fields that differ from the default, and the style mixing probability used
# in training. Table 1 A, the ProGAN generator itself (networks_progan.py), is not built here.
# The traditional generator: z (pixel-normalised) -> dense 4x4 input, pixel norm after every layer,
# no styles, no noise, and no truncation (the official truncation_psi=None).
TRADITIONAL = dict(use_styles=False, use_pixel_norm=True, use_instance_norm=False, mapping_layers=0,
                   const_input_layer=False, use_noise=False, truncation_cutoff=0)
PAPER_CONFIGS = {
    "table1-b": {"cfg": dict(TRADITIONAL), "mixing": 0.0},  # tuned baseline
    "table1-c": {"cfg": dict(const_input_layer=False, use_noise=False), "mixing": 0.0},  # + mapping, styles
    "table1-d": {"cfg": dict(use_noise=False), "mixing": 0.0},  # remove traditional input
    "table1-e": {"cfg": {}, "mixing": 0.0},  # + noise inputs
    "table1-f": {"cfg": {}, "mixing": 0.9},  # + mixing regularization: the default
    "table2-mix0": {"cfg": {}, "mixing": 0.0},
    "table2-mix50": {"cfg": {}, "mixing": 0.5},
    "table2-mix90": {"cfg": {}, "mixing": 0.9},
    "table2-mix100": {"cfg": {}, "mixing": 1.0},
    "table4-traditional-0": {"cfg": dict(TRADITIONAL), "mixing": 0.0},
    "table4-traditional-8": {"cfg": dict(TRADITIONAL, mapping_layers=8), "mixing": 0.0},
    "table4-stylebased-0": {"cfg": dict(mapping_layers=0), "mixing": 0.9},
    "table4-stylebased-1": {"cfg": dict(mapping_layers=1), "mixing": 0.9},
    "table4-stylebased-2": {"cfg": dict(mapping_layers=2), "mixing": 0.9},
    "table4-stylebased-8": {"cfg": dict(mapping_layers=8), "mixing": 0.9},
}


def to_uint8(img):
    """Generator output in [-1, 1] -> uint8, rounded down as the official code does."""
    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def fp32_or_wider(t):
    """t in fp32, or as it is when wider (an fp64 model in exact tests)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def check_res(res, cfg):
    if not isinstance(res, int) or res < 4 or res > cfg.resolution or res & (res - 1):
        raise ValueError(f"res must be a power of two between 4 and {cfg.resolution}, got {res!r}")
    return res


# ----------------------------------------------------------------------------------------------
# Equalized learning rate primitives (ProGAN section 4.1): weights are stored as N(0, 1/lrmul) and
# scaled at run time by gain / sqrt(fan_in) * lrmul, so Adam sees every weight at the same scale.
# A layer made with scale_after=True (those that feed one of kernels.py's epilogues: bias + leaky
# ReLU, AdaIN) runs with its unscaled weight and the epilogue multiplies the output by the scale as
# it reads it (w_scale * conv(x, w) = conv(x, w_scale * w)): no pass over the weights to scale them,
# forward or backward. The same function (tests/test_model.py), rounded at another place.
# scale_in_epilogues switches it off again (train.on_device does on a CPU).

class EqualLinear(nn.Module):
    def __init__(self, in_features, out_features, gain=math.sqrt(2), lrmul=1.0, bias=True, scale_after=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lrmul)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.w_scale = gain / math.sqrt(in_features) * lrmul
        self.lrmul, self.feeds_epilogue, self.scale_after = lrmul, scale_after, scale_after

    def kernel(self):
        """(weight, scale) whose product is the run-time weight (see scale_weights)."""
        return self.weight, self.w_scale

    def out_scale(self):
        """What the epilogue multiplies the output by: the scale, if it is not in the weight."""
        return self.w_scale if self.scale_after else 1.0

    def forward(self, x, weights=None, act=False):
        """weights: {layer: run-time weight} of scale_weights, or None to make this layer's own."""
        w = run_weight(self) if weights is None else weights[self]
        # lrmul 1 (all but the mapping network): the bias is used as stored, without an op
        b = self.bias if self.bias is None or self.lrmul == 1 else self.bias * self.lrmul
        if act and b is not None:  # leaky ReLU's sqrt(2) gain already lives in w_scale
            return kernels.bias_lrelu(F.linear(x, w), b, w_scale=self.out_scale())
        assert not self.scale_after, "a layer without an epilogue applies its scale to the weight"
        return F.linear(x, w, b)  # the bias added by the matmul itself


# The official code fuses upsampling + conv (G) and conv + downsampling (D) into one stride-2
# (transposed) conv with a 4x4 kernel at 128x128 and above (fused_scale="auto"): the same function of
# the same 3x3 parameters, with 16 multiply-adds per output instead of 36 (G) or 9 x 4 (D), for the
# cost of making the 4x4 kernel. fuse_resampling moves the threshold (train.on_device does on a CPU).
FUSED_FROM = 128


class EqualConv2d(nn.Module):
    """Conv with equalized lr. up=True: 2x upsample first; down=True: 2x downsample after.
    fused=True turns the resampling into one stride-2 (transposed) conv whose 4x4 kernel is the sum
    of the four shifted 3x3 kernels (see FUSED_FROM)."""

    def __init__(self, in_channels, out_channels, kernel, gain=math.sqrt(2), up=False, down=False,
                 fused=False, bias=True, scale_after=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.w_scale = gain / math.sqrt(in_channels * kernel * kernel)
        self.up, self.down, self.fused = up, down, fused
        self.feeds_epilogue = self.scale_after = scale_after
        self.stored_fused = fused  # the official form of this layer, which fixes its kernel's orientation

    def kernel(self):
        """(kernel, scale) whose product is the run-time weight (see scale_weights). Fused: the sum of
        the four shifted kernels is 4x a 2x2 box filter over the zero-padded kernel, so 4 joins
        w_scale; x0.25 when downsampling (average pooling), none in G: nearest upsampling copies, it
        does not average. A transposed conv correlates with the flipped kernel, so an upsampling
        layer run in the other form than the official one (fuse_resampling) flips its kernel."""
        w = self.weight.flip(2, 3) if self.up and self.fused != self.stored_fused else self.weight
        if not self.fused:
            return w, self.w_scale
        return F.avg_pool2d(w, 2, stride=1, padding=1), self.w_scale * (4 if self.up else 1)

    def out_scale(self):
        """What the epilogue multiplies the output by: the scale, if it is not in the weight."""
        if not self.scale_after:
            return 1.0
        return self.w_scale * (4 if self.fused and self.up else 1)

    def conv(self, x, weights=None, pool=True):
        """x convolved with the run-time weight: weights[self] (scale_weights), or made here if None;
        with scale_after, the output still wants out_scale(). pool=False: a downsampling layer's
        (unfused) conv without its 2x2 average, which kernels.bias_lrelu_pool then takes."""
        w = run_weight(self) if weights is None else weights[self]
        if self.fused and self.up:
            return kernels.conv2d(x, w.transpose(0, 1), stride=2, padding=1, transposed=True)
        if self.fused:
            return kernels.conv2d(x, w, stride=2, padding=1)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = kernels.conv2d(x, w, padding=w.shape[-1] // 2)
        if self.down and pool:
            x = F.avg_pool2d(x, 2)
        return x

    def forward(self, x, weights=None, act=False):
        if act and self.down and not self.fused:  # average, bias and leaky ReLU in one kernel
            return kernels.bias_lrelu_pool(self.conv(x, weights, pool=False), self.bias, w_scale=self.out_scale())
        x = self.conv(x, weights)
        if act:
            return kernels.bias_lrelu(x, self.bias, w_scale=self.out_scale())
        assert not self.scale_after, "a layer without an epilogue applies its scale to the weight"
        return x + self.bias.to(x.dtype).view(1, -1, 1, 1)


def run_weight(layer):
    """The weight an equalized-lr layer runs with: its kernel times its scale, or the kernel alone
    when the epilogue applies the scale (scale_after)."""
    k, scale = layer.kernel()
    return k if layer.scale_after else k * scale


def scale_weights(layers):
    """{layer: run-time weight} of equalized-lr layers (run_weight), all in one launch
    (kernels.scale_weights: a foreach multiply of those without scale_after, and under autocast one
    foreach cast to its dtype, which the convolutions would otherwise make one weight at a time)
    instead of one per layer; the same products. A network makes the weights it uses once per
    forward and hands the dict to its layers."""
    ks, scales = zip(*(layer.kernel() for layer in layers))
    scales = [1.0 if layer.scale_after else s for layer, s in zip(layers, scales)]
    return dict(zip(layers, kernels.scale_weights(ks, scales)))


def blur(x):
    """[1, 2, 1] x [1, 2, 1] / 16 depthwise low-pass, zero 'same' padding (official blur2d); its
    gradient is the same blur (kernels.blur2d), so R1 computes no gradient for the fixed filter."""
    return kernels.blur2d(x)


def upscale2d(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downscale2d(x):
    return F.avg_pool2d(x, 2)


def pixel_norm(x, eps=1e-8):
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def instance_norm(x, eps=1e-8):
    """Each [H, W] plane to zero mean and unit variance, statistics in fp32 (official instance_norm)."""
    u = x.float()
    u = u - u.mean(dim=(2, 3), keepdim=True)
    return (u * torch.rsqrt(u.square().mean(dim=(2, 3), keepdim=True) + eps)).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Mapping network f

class MappingNetwork(nn.Module):
    """z -> pixel norm -> 8 x (dense 512 + leaky ReLU), lrmul 0.01 -> w."""

    def __init__(self, cfg):
        super().__init__()
        dims = [cfg.z_dim] + [cfg.mapping_fmaps] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        self.layers = nn.ModuleList([EqualLinear(dims[i], dims[i + 1], lrmul=cfg.mapping_lrmul)
                                     for i in range(cfg.mapping_layers)])

    def forward(self, z):
        x = pixel_norm(z)
        if not self.layers:
            return x
        # Every layer's run-time weight and bias (x w_scale, x lrmul) in one launch, not two per layer
        # (kernels.scale_weights: under autocast the weights come out cast as F.linear would cast them;
        # the biases stay fp32, as bias_lrelu reads them)
        params = kernels.scale_weights([p for layer in self.layers for p in (layer.weight, layer.bias)],
                                       [c for layer in self.layers for c in (layer.w_scale, layer.lrmul)],
                                       cast=[True, False] * len(self.layers))
        for w, b in zip(params[0::2], params[1::2]):
            x = kernels.bias_lrelu(F.linear(x, w), b)  # leaky ReLU's sqrt(2) gain is in w_scale
        return x


# ----------------------------------------------------------------------------------------------
# Synthesis network g

class LayerEpilogue(nn.Module):
    """After every synthesis conv, in the official order: + noise * weight[c] (a fresh N(0, 1) map
    per layer, weight initialised to 0) -> + bias -> leaky ReLU -> [pixel norm] -> instance norm ->
    style x * (ys + 1) + yb with (ys, yb) = A(w). The style-based layer (instance norm and style,
    no pixel norm) is one fused kernel, kernels.noise_adain; the paper's other generators (the
    traditional one: pixel norm only) run the steps one by one."""

    def __init__(self, cfg, channels, res):
        super().__init__()
        self.noise_weight = nn.Parameter(torch.zeros(channels)) if cfg.use_noise else None
        if cfg.use_noise:  # fixed maps for noise_mode="const" (reproducible samples)
            self.register_buffer("noise_const", torch.randn(1, 1, res, res))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style = EqualLinear(cfg.w_dim, 2 * channels, gain=1.0) if cfg.use_styles else None  # A
        self.use_pixel_norm, self.use_instance_norm = cfg.use_pixel_norm, cfg.use_instance_norm

    def forward(self, x, noise, scale, shift, blur_x=False, w_scale=1.0):
        """x [N, C, H, W]; noise [N or 1, 1, H, W] or None; scale, shift [N, C]: ys + 1 and yb, made
        for all layers at once by SynthesisNetwork.styles (None without styles). blur_x: the epilogue
        of blur(x), the upsampling layer's (in the style-based layer, blurred inside its kernel).
        w_scale: the conv's equalized-lr scale, applied here (EqualConv2d's scale_after)."""
        if noise is not None:  # a random map is drawn in the convs' dtype: no cast but at the fp32 const 4x4
            noise = noise.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        if scale is not None and self.use_instance_norm and not self.use_pixel_norm:
            return kernels.noise_adain(x, noise, self.noise_weight, self.bias, scale, shift, blur=blur_x,
                                       w_scale=w_scale)
        if blur_x:
            x = blur(x)
        if w_scale != 1.0:
            x = x * w_scale
        if noise is not None:
            x = x + noise * self.noise_weight.to(x.dtype).view(1, -1, 1, 1)
        x = kernels.bias_lrelu(x, self.bias)
        if self.use_pixel_norm:
            x = pixel_norm(x.float()).to(x.dtype)
        if self.use_instance_norm:
            x = instance_norm(x)
        if scale is not None:
            x = (x.float() * scale[:, :, None, None] + shift[:, :, None, None]).to(x.dtype)
        return x


class SynthesisBlock(nn.Module):
    """One resolution: [const | dense(w) | upsample-conv 3x3 + blur] -> epilogue -> conv 3x3 ->
    epilogue, plus the ToRGB used when this is the output resolution."""

    def __init__(self, cfg, res):
        super().__init__()
        stage = int(math.log2(res))
        out_ch = cfg.nf(stage - 1)
        if res == 4 and cfg.const_input_layer:
            self.const = nn.Parameter(torch.ones(1, out_ch, 4, 4))  # official init: ones
        elif res == 4:  # the traditional input (ProGAN): w -> 4x4xC; official gain sqrt(2)/4 to
            # match ProGAN's, no bias of its own (the epilogue's is per channel)
            self.dense = EqualLinear(cfg.w_dim, out_ch * 16, gain=math.sqrt(2) / 4, bias=False)
        else:
            self.conv0 = EqualConv2d(cfg.nf(stage - 2), out_ch, 3, up=True, fused=res >= FUSED_FROM,
                                     bias=False, scale_after=True)  # the biases are the epilogue's
        self.epi0 = LayerEpilogue(cfg, out_ch, res)
        self.conv1 = EqualConv2d(out_ch, out_ch, 3, bias=False, scale_after=True)
        self.epi1 = LayerEpilogue(cfg, out_ch, res)
        self.torgb = EqualConv2d(out_ch, cfg.num_channels, 1, gain=1.0)
        self.res = res

    def layers(self):
        """The equalized-lr layers of its two styled layers (not ToRGB, used only at the output)."""
        return [getattr(self, name) for name in ("dense", "conv0", "conv1") if hasattr(self, name)]

    def forward(self, x, w, noises, styles, weights):
        """x: the previous block's features (None at 4x4); w [N, w_dim]: the first layer's latent,
        which only the traditional input reads; noises and styles: this block's two layers';
        weights: the run-time weights (scale_weights)."""
        if self.res > 4:
            x = self.conv0.conv(x, weights)  # blurred by epi0 (the official blur after the upsampling conv)
        elif hasattr(self, "const"):
            x = self.const.expand(w.shape[0], -1, -1, -1)
        else:
            x = self.dense(w, weights).view(w.shape[0], -1, 4, 4)  # [N, C * 16] -> [N, C, 4, 4] as TF's
        x = self.epi0(x, noises[0], *styles[0], blur_x=self.res > 4,
                      w_scale=self.conv0.out_scale() if self.res > 4 else 1.0)
        return self.epi1(self.conv1.conv(x, weights), noises[1], *styles[1], w_scale=self.conv1.out_scale())


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList([SynthesisBlock(cfg, 2 ** s) for s in range(2, cfg.log2_res + 1)])

    def epilogues(self, n):
        """The 2n styled layers of the first n blocks, in order (layer i reads ws[:, i])."""
        return [epi for block in self.blocks[:n] for epi in (block.epi0, block.epi1)]

    def noises(self, ws, n, noise_mode):
        """The noise map of each layer of the first n blocks: a fresh N(0, 1) [N, 1, H, W] per layer,
        all drawn in one call ("random"), the stored [1, 1, H, W] maps ("const"), or None ("none", or
        a generator without noise inputs)."""
        epis = self.epilogues(n)
        if not self.cfg.use_noise or noise_mode == "none":
            return [None] * len(epis)
        if noise_mode == "const":
            return [epi.noise_const for epi in epis]
        N, dev = ws.shape[0], ws.device  # drawn in the dtype of the synthesis convs' outputs
        dtype = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else ws.dtype
        sizes = [N * epi.noise_const.numel() for epi in epis]
        flat = torch.randn(sum(sizes), device=dev, dtype=dtype)
        return [z.view(N, *epi.noise_const.shape[1:]) for z, epi in zip(flat.split(sizes), epis)]

    def styles(self, ws, n):
        """(scale, shift) = (ys + 1, yb), each [N, C], of every layer of the first n blocks ((None,
        None) without styles). Layer i's style is its own dense layer (official StyleMod, gain 1) of
        its own latent: [ys_i, yb_i] = ws[:, i] (s A_i)^T + b_i. The layers of one width C (runs of
        consecutive layers) are one batched matmul with a batch entry per ys_i and per yb_i,
        [2k, N, w_dim] @ [2k, w_dim, C]: the same dot products, each output a contiguous [N, C],
        and no launch per layer, forward or backward."""
        epis = self.epilogues(n)
        if not self.cfg.use_styles:
            return [(None, None)] * len(epis)
        affines = [epi.style for epi in epis]
        (N, _, w_dim), L = ws.shape, len(affines)
        widths = [a.weight.shape[0] // 2 for a in affines]
        runs = [(C, len(list(run))) for C, run in itertools.groupby(widths)]  # (C, k): k layers of width C
        sizes = [2 * k * C for C, k in runs]
        # The style is tiny; fp32 keeps ys + 1 from rounding in bf16. All w_scale agree (in = w_dim);
        # it multiplies the latents, not the weights (the same products): no pass over the weights.
        with torch.autocast(ws.device.type, enabled=False):
            A = torch.cat([a.weight for a in affines])  # [sum 2C, w_dim]
            b = torch.cat([a.bias for a in affines])
            x = (fp32_or_wider(ws[:, :L]) * affines[0].w_scale).transpose(0, 1)[:, None].expand(L, 2, N, w_dim)
            x = x.reshape(2 * L, N, w_dim).split([2 * k for _, k in runs])  # ws[:, i] for ys_i and for yb_i
            out = []
            for (C, k), x_run, A_run, b_run in zip(runs, x, A.split(sizes), b.split(sizes)):
                out += torch.baddbmm(b_run.view(2 * k, 1, C), x_run, A_run.view(2 * k, C, w_dim).mT).unbind()
        return list(zip(torch._foreach_add(out[0::2], 1.0), out[1::2]))  # ys + 1 of every layer in one launch

    def forward(self, ws, res, alpha=1.0, noise_mode="random"):
        """ws [N, num_ws, w_dim] -> images [N, C, res, res]. While res fades in (alpha < 1) the
        output is lerp(upsample(rgb of res/2), rgb of res, alpha), as in ProGAN."""
        n = int(math.log2(res)) - 1  # blocks in use
        noises, styles, w0 = self.noises(ws, n, noise_mode), self.styles(ws, n), ws[:, 0]
        fade = alpha < 1 and n > 1
        torgbs = [block.torgb for block in self.blocks[n - 1 - fade:n]]
        weights = scale_weights([layer for block in self.blocks[:n] for layer in block.layers()] + torgbs)
        x = x_prev = None
        for i, block in enumerate(self.blocks[:n]):
            x_prev = x
            x = block(x, w0, noises[2 * i:2 * i + 2], styles[2 * i:2 * i + 2], weights)
        rgb = self.blocks[n - 1].torgb(x, weights)
        if fade:
            rgb_prev = upscale2d(self.blocks[n - 2].torgb(x_prev, weights))
            rgb = torch.lerp(rgb_prev, rgb, max(float(alpha), 0.0))
        return rgb


# ----------------------------------------------------------------------------------------------
# The generator wrapper: mapping, truncation, style mixing, synthesis

def mix_styles(ws1, ws2, cutoff):
    """Layers [0, cutoff) from ws1, layers [cutoff, num_ws) from ws2. cutoff: an int, or a tensor
    on the device (the official tf.where formulation: no host sync)."""
    layer = torch.arange(ws1.shape[1], device=ws1.device)[None, :, None]
    return torch.where(layer < cutoff, ws1, ws2)


class Generator(nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg or StyleGANConfig()
        self.mapping = MappingNetwork(self.cfg)
        self.synthesis = SynthesisNetwork(self.cfg)
        self.register_buffer("w_avg", torch.zeros(self.cfg.w_dim))

    def check_z(self, z):
        if z.ndim != 2 or z.shape[1] != self.cfg.z_dim:
            raise ValueError(f"z must have shape [N, {self.cfg.z_dim}], got {tuple(z.shape)}")

    def map(self, z, psi=1.0, track_w_avg=True, tracked=None):
        """z [N, z_dim] -> ws [N, num_ws, w_dim], truncated towards w_avg in the first
        truncation_cutoff layers: lerp(w_avg, w, psi). In training, w_avg follows the EMA of w
        (of its first `tracked` rows; all by default)."""
        self.check_z(z)
        with torch.autocast(z.device.type, enabled=False):  # w is tiny; fp32 keeps lrmul 0.01 exact
            w = self.mapping(fp32_or_wider(z))
        if self.training and track_w_avg:  # the centre of W for truncation (official dlatent_avg_beta)
            with torch.no_grad():
                w_mean = w[:tracked].mean(0).to(self.w_avg.dtype)
                self.w_avg.copy_(w_mean.lerp(self.w_avg, self.cfg.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.cfg.num_ws, 1)
        return self.truncate(ws, psi)

    def truncate(self, ws, psi):
        cut = self.cfg.truncation_cutoff
        if psi == 1 or cut == 0:
            return ws
        ws = ws.clone()
        ws[:, :cut] = self.w_avg.to(ws.dtype).lerp(ws[:, :cut], psi)
        return ws

    def forward(self, z, res=None, alpha=1.0, psi=1.0, mixing=0.0, noise_mode="random"):
        """z [N, z_dim] -> images [N, C, res, res]. mixing: probability that a second latent takes
        over from a crossover layer drawn uniformly in [1, layers in use) (paper section 3.1)."""
        res = check_res(self.cfg.resolution if res is None else res, self.cfg)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if mixing > 0 and not self.cfg.use_styles:  # only ws[:, 0] is read: nothing to mix
            raise ValueError("style mixing needs styles; this generator has use_styles=False")
        self.check_z(z)
        num_layers = 2 * int(math.log2(res)) - 2
        if mixing > 0 and num_layers > 1:
            # The official G_style: a second latent always (both in one pass of the mapping network;
            # the second does not move w_avg), and with probability `mixing` a crossover drawn in
            # [1, layers in use), else none (num_ws). Drawn on the device: no host sync in a step.
            ws1, ws2 = self.map(torch.cat([z, torch.randn_like(z)]), tracked=len(z)).chunk(2)
            dev = z.device
            cutoff = torch.where(torch.rand((), device=dev) < mixing,
                                 torch.randint(1, num_layers, (), device=dev), self.cfg.num_ws)
            ws = mix_styles(ws1, ws2, cutoff)
        else:
            ws = self.map(z)
        ws = self.truncate(ws, psi)  # after mixing, as the official G_style does
        return self.synthesis(ws, res, alpha, noise_mode)


# ----------------------------------------------------------------------------------------------
# Discriminator

def minibatch_stddev(x, group_size=4, num_features=1):
    """ProGAN section 3: the stddev of each feature over a group of samples, averaged to
    num_features numbers per group and appended as constant maps (kernels.minibatch_stddev_ref).
    Computed in fp32. The official code requires N % group_size == 0; here the group shrinks to a
    divisor of N."""
    G = min(group_size, x.shape[0])
    while x.shape[0] % G:
        G -= 1
    return kernels.minibatch_stddev(x, G, num_features)


class DiscriminatorBlock(nn.Module):
    """conv 3x3 -> lrelu -> blur -> downsample-conv 3x3 -> lrelu (fused at inputs >= FUSED_FROM)."""

    def __init__(self, cfg, res):
        super().__init__()
        stage = int(math.log2(res))
        self.conv0 = EqualConv2d(cfg.nf(stage - 1), cfg.nf(stage - 1), 3, scale_after=True)
        self.conv1 = EqualConv2d(cfg.nf(stage - 1), cfg.nf(stage - 2), 3, down=True,
                                  fused=res >= FUSED_FROM, scale_after=True)
        self.res = res

    def forward(self, x, weights):
        x = self.conv0.conv(x, weights)
        x = kernels.bias_lrelu_blur(x, self.conv0.bias, w_scale=self.conv0.out_scale())  # conv0's lrelu, blurred
        return self.conv1(x, weights, act=True)


class Discriminator(nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg = cfg or StyleGANConfig()
        stages = range(2, cfg.log2_res + 1)
        self.fromrgb = nn.ModuleList([EqualConv2d(cfg.num_channels, cfg.nf(s - 1), 1, scale_after=True)
                                      for s in stages])
        self.blocks = nn.ModuleList([DiscriminatorBlock(cfg, 2 ** s) for s in stages if s > 2])
        self.mbstd = cfg.mbstd_features if cfg.mbstd_group_size > 1 else 0  # official: off for groups <= 1
        self.conv = EqualConv2d(cfg.nf(1) + self.mbstd, cfg.nf(1), 3, scale_after=True)
        self.dense0 = EqualLinear(cfg.nf(1) * 16, cfg.nf(0), scale_after=True)
        self.dense1 = EqualLinear(cfg.nf(0), 1, gain=1.0)

    def forward(self, img, alpha=1.0):
        """img [N, C, res, res] -> logits [N, 1]. While res fades in (alpha < 1) the features of
        the new top block are blended with FromRGB of the 2x downsampled image."""
        if img.ndim != 4 or img.shape[1] != self.cfg.num_channels or img.shape[2] != img.shape[3]:
            raise ValueError(f"D expects images [N, {self.cfg.num_channels}, res, res], "
                             f"got {tuple(img.shape)}")
        n = int(math.log2(check_res(img.shape[2], self.cfg))) - 2  # blocks above 4x4
        fade = alpha < 1 and n > 0
        weights = scale_weights([*self.fromrgb[n - fade:n + 1], *[conv for block in self.blocks[:n]
                                 for conv in (block.conv0, block.conv1)], self.conv, self.dense0, self.dense1])
        x = self.fromrgb[n](img, weights, act=True)
        for i in range(n - 1, -1, -1):
            x = self.blocks[i](x, weights)
            if i == n - 1 and fade:
                y = self.fromrgb[n - 1](downscale2d(img), weights, act=True)
                x = torch.lerp(y, x, max(float(alpha), 0.0))
        if self.mbstd:
            x = minibatch_stddev(x, self.cfg.mbstd_group_size, self.mbstd)
        x = self.conv(x, weights, act=True)
        x = self.dense0(x.flatten(1), weights, act=True)
        return self.dense1(x, weights)


def scale_in_epilogues(net, on=True):
    """net (G or D) with the equalized-lr scales of the layers that feed an epilogue kernel applied
    by that kernel (on, as built) or multiplied into their weights (off): the same function
    (tests/test_model.py), another cost. Returns net."""
    for layer in net.modules():
        if getattr(layer, "feeds_epilogue", False):
            layer.scale_after = on
    return net


def fuse_resampling(net, from_res=FUSED_FROM):
    """G or D with the resampling convs of its blocks at from_res and above fused, those below not
    (FUSED_FROM): the same parameters and function (tests/test_model.py), another cost. Returns net."""
    for block in net.modules():
        if isinstance(block, SynthesisBlock) and block.res > 4:
            block.conv0.fused = block.res >= from_res
        elif isinstance(block, DiscriminatorBlock):
            block.conv1.fused = block.res >= from_res
    return net


# ----------------------------------------------------------------------------------------------
# NVIDIA's pretrained networks (karras2019stylegan-*.pkl): TensorFlow pickles of a tuple (G, D, Gs)
# of dnnlib.tflib.network.Network, each pickled as a dict {version, name, static_kwargs, components,
# build_module_src, build_func_name, variables}: (local name, float32 array) pairs, and the
# sub-networks G_mapping and G_synthesis in components. TensorFlow rebuilds a network by executing
# build_module_src; here a restricted unpickler builds that class as an inert record, and numpy
# arrays, nothing else. Both sides store weights alike (N(0, 1/lrmul), times gain / sqrt(fan_in) *
# lrmul at run time; biases times lrmul), so values copy exactly, transposed from TF's
# [kh, kw, in, out] and [in, out].

class OfficialNetwork:
    """Inert stand-in for dnnlib.tflib.network.Network: unpickling sets its attributes from the
    pickled state dict (name, variables, components, ...) and runs nothing."""

    def __init__(self, **state):
        self.__dict__.update(state)


# The only globals an official file references (numpy 2 spells numpy.core numpy._core); numpy's
# array helpers are taken from its own reductions, so that no deprecated module is imported.
OFFICIAL_GLOBALS = {("dnnlib.tflib.network", "Network"): OfficialNetwork, ("numpy", "ndarray"): np.ndarray,
                    ("numpy", "dtype"): np.dtype,
                    **{(m, f.__name__): f for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                       for f in (np.zeros(0).__reduce__()[0], np.float32(0).__reduce__()[0])}}
OFFICIAL_NAMES = {obj: key for key, obj in reversed(OFFICIAL_GLOBALS.items())}  # written as numpy.core
OFFICIAL_FUNCS = ("G_style", "G_mapping", "G_synthesis", "D_basic")
# static_kwargs named otherwise than their StyleGANConfig field (the rest share the name), and
# official options built here at one value only (unless a config field of that name exists).
OFFICIAL_RENAMES = dict(latent_size="z_dim", dlatent_size="w_dim", dlatent_avg_beta="w_avg_beta",
                        mbstd_num_features="mbstd_features")
OFFICIAL_FIXED = dict(label_size=0, fmap_decay=1.0, nonlinearity="lrelu", mapping_nonlinearity="lrelu",
                      use_wscale=True, normalize_latents=True, blur_filter=[1, 2, 1], fused_scale="auto",
                      use_styles=True, const_input_layer=True, use_pixel_norm=False, use_instance_norm=True)
OFFICIAL_PLACEHOLDER_SRC = ("raise RuntimeError('written by stylegan.py (PyTorch) without the official "
                            "networks_stylegan.py: export it with --build-src to load it in TensorFlow')\n")
# TF's dense [in, out] and conv [kh, kw, in, out] <-> torch's [out, in] and [out, in, kh, kw]
TF_TO_TORCH, TORCH_TO_TF = {2: (1, 0), 4: (3, 2, 0, 1)}, {2: (1, 0), 4: (2, 3, 1, 0)}


def relayout(key, t, perms):
    return t.permute(perms[t.ndim]).contiguous() if key.endswith(".weight") else t


def weight_bias(key, name):
    return {f"{key}.{p}": f"{name}/{p}" for p in ("weight", "bias")}


def official_names(cfg):
    """({G state_dict key: official name}, {D key: name}) in the order networks_stylegan.py creates the
    variables; a sub-network's variables carry its name, as in tflib's Network.vars."""
    L, syn = cfg.log2_res, "G_synthesis/"
    # the paper's Table 1 generators (no styles, a dense input layer), where the config has them
    styles, const = getattr(cfg, "use_styles", True), getattr(cfg, "const_input_layer", True)
    g = {"w_avg": "dlatent_avg"}
    if cfg.use_noise:
        g.update({f"synthesis.blocks.{i // 2}.epi{i % 2}.noise_const": f"{syn}noise{i}"
                  for i in range(cfg.num_ws)})
    for b in range(L - 1):
        r, pre = 2 ** (b + 2), f"synthesis.blocks.{b}."
        scopes = (f"{r}x{r}/Conv0_up", f"{r}x{r}/Conv1") if r > 4 else \
            ("4x4/Const" if const else "4x4/Dense", "4x4/Conv")
        for j, scope in enumerate(scopes):
            if r > 4 or j == 1:
                g[f"{pre}conv{j}.weight"] = f"{syn}{scope}/weight"
            elif const:
                g[pre + "const"] = f"{syn}4x4/Const/const"
            else:  # the traditional input, a dense layer w -> 4x4
                g[pre + "dense.weight"] = f"{syn}4x4/Dense/weight"
            if cfg.use_noise:
                g[f"{pre}epi{j}.noise_weight"] = f"{syn}{scope}/Noise/weight"
            g[f"{pre}epi{j}.bias"] = f"{syn}{scope}/bias"
            g.update(weight_bias(f"{pre}epi{j}.style", f"{syn}{scope}/StyleMod") if styles else {})
        g.update(weight_bias(pre + "torgb", f"{syn}ToRGB_lod{L - b - 2}"))
    for i in range(cfg.mapping_layers):
        g.update(weight_bias(f"mapping.layers.{i}", f"G_mapping/Dense{i}"))
    d = weight_bias(f"fromrgb.{L - 2}", "FromRGB_lod0")
    for s in range(L, 2, -1):  # D runs from the top resolution down
        d.update({**weight_bias(f"blocks.{s - 3}.conv0", f"{2 ** s}x{2 ** s}/Conv0"),
                  **weight_bias(f"blocks.{s - 3}.conv1", f"{2 ** s}x{2 ** s}/Conv1_down"),
                  **weight_bias(f"fromrgb.{s - 3}", f"FromRGB_lod{L - s + 1}")})
    for key in ("conv", "dense0", "dense1"):
        d.update(weight_bias(key, f"4x4/{key.capitalize()}"))
    return g, d


class OfficialUnpickler(pickle.Unpickler):
    """Builds only OFFICIAL_GLOBALS. Any other global (os.system, builtins.eval, an unknown class)
    is refused before it is imported or looked up, so nothing from the file runs."""

    def find_class(self, module, name):
        if (module, name) not in OFFICIAL_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: official StyleGAN pickles "
                                         f"reference only dnnlib.tflib.network.Network and numpy arrays")
        return OFFICIAL_GLOBALS[module, name]


def official_variables(net, path):
    """A Network record -> {name: float32 array}, with its sub-networks' under their names."""
    if not isinstance(net, OfficialNetwork):
        raise ValueError(f"{path}: a {type(net).__name__} where a dnnlib.tflib Network should be")
    out = {}
    for name, value in net.variables:
        if not isinstance(value, (np.ndarray, np.generic)) or value.dtype != np.float32:
            raise ValueError(f"{path}: {net.name}/{name} is {type(value).__name__}, not a float32 array")
        out[name] = np.asarray(value)
    for comp in net.components.values():
        out.update({f"{comp.name}/{k}": v for k, v in official_variables(comp, path).items()})
    return out


def official_config(g, d, kwargs):
    """The config of official G variables g and D variables d. Shapes decide what they show; the
    static_kwargs give the rest (mapping lrmul, truncation, mbstd group) and are refused where they
    ask for an architecture this project does not build."""
    fields = StyleGANConfig.__dataclass_fields__
    for k, v in OFFICIAL_FIXED.items():
        if k not in fields and kwargs.get(k, v) != v:
            raise ValueError(f"the network was built with {k}={kwargs[k]!r}; this project builds {k}={v!r} "
                             f"only")
    cfg = {OFFICIAL_RENAMES.get(k, k): v for k, v in kwargs.items()
           if OFFICIAL_RENAMES.get(k, k) in fields and v is not None}
    L = 1 + sum(n.startswith("G_synthesis/ToRGB_lod") and n.endswith("/weight") for n in g)
    nf = [d["4x4/Dense0/bias"].shape[0]] + [g[f"G_synthesis/ToRGB_lod{L - 1 - s}/weight"].shape[2]
                                            for s in range(1, L)]  # nf(stage) for stages 0..L-1
    dense = [g[f"G_mapping/Dense{i}/weight"]
             for i in range(sum(n.startswith("G_mapping/Dense") and n.endswith("/weight") for n in g))]
    w_dim = g["dlatent_avg"].shape[0]
    cfg.update(resolution=2 ** L, num_channels=g["G_synthesis/ToRGB_lod0/weight"].shape[3], w_dim=w_dim,
               z_dim=dense[0].shape[0] if dense else w_dim, mapping_layers=len(dense), fmap_max=max(nf),
               use_noise="G_synthesis/noise0" in g, mbstd_features=d["4x4/Conv/weight"].shape[2] - nf[1])
    if len(dense) > 1:
        cfg["mapping_fmaps"] = dense[0].shape[1]
    if cfg["mbstd_features"] == 0:  # no stddev channel: built with mbstd_group_size <= 1 (layer off)
        cfg.update(mbstd_group_size=min(cfg.get("mbstd_group_size", 0), 1), mbstd_features=1)
    below = [(c, s) for s, c in enumerate(nf) if c < max(nf)]
    if below:  # the first stage under the cap fixes fmap_base; with none, any base >= the cap's works
        cfg["fmap_base"] = below[0][0] * 2 ** below[0][1]
    return StyleGANConfig(**cfg)


def from_official(variables, names, shapes, where):
    """Official variables -> a state dict in which every variable but lod fills exactly one tensor."""
    missing = [n for n in names.values() if n not in variables]
    extra = sorted(set(variables) - set(names.values()) - {n for n in variables if n.split("/")[-1] == "lod"})
    if missing or extra:
        raise ValueError(f"{where} does not match the config read from it: missing {missing[:4]}, "
                         f"unexpected {extra[:4]}")
    state = {k: relayout(k, torch.from_numpy(variables[n]), TF_TO_TORCH) for k, n in names.items()}
    bad = [f"{names[k]} {tuple(t.shape)}" for k, t in state.items() if t.shape != shapes[k]]
    if bad:
        raise ValueError(f"{where}: shapes that do not fit the config read from it: {bad[:4]}")
    return state


def read_official(path):
    """NVIDIA's pickle -> a train.py-shaped checkpoint holding the networks only: config (read from
    the variables), state dicts G, D and G_ema (from Gs), res and alpha (from lod). Nothing in the
    file is executed: build_module_src stays text, and only OFFICIAL_GLOBALS can be built."""
    try:
        with open(path, "rb") as f:
            nets = OfficialUnpickler(f).load()
    except Exception as e:  # a refused global, a truncated or a foreign file
        raise ValueError(f"{path} is not a readable official StyleGAN pickle ({type(e).__name__}: {e})") \
            from None
    if not (isinstance(nets, tuple) and len(nets) == 3 and all(isinstance(n, OfficialNetwork) for n in nets)):
        raise ValueError(f"{path} is not an official StyleGAN pickle: it holds a {type(nets).__name__}, "
                         f"not the networks (G, D, Gs)")
    try:
        g, d, gs = (official_variables(net, path) for net in nets)
        for net, func in zip(nets, ("G_style", "D_basic", "G_style")):
            if net.build_func_name != func:
                raise ValueError(f"{path}: {net.name} is built by {net.build_func_name!r}, not StyleGAN's "
                                 f"{func} (a StyleGAN2 or ProGAN pickle?)")
        cfg = official_config(gs, d, {**nets[1].static_kwargs, **nets[2].static_kwargs})
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path} is not a StyleGAN network pickle ({type(e).__name__}: {e})") from None
    # lod = log2(final / res) while res is stable, + (1 - alpha) while res fades in
    lod = min(max(float(gs.get("lod", 0.0)), 0.0), cfg.log2_res - 2)
    ckpt = dict(config=cfg.to_dict(), res=2 ** (cfg.log2_res - math.floor(lod)), alpha=round(1 - lod % 1, 6),
                cur_nimg=None)
    with torch.device("meta"):  # shapes only
        shapes = [{k: v.shape for k, v in net.state_dict().items()}
                  for net in (Generator(cfg), Discriminator(cfg))]
    names = official_names(cfg)
    for key, variables, i in (("G", g, 0), ("D", d, 1), ("G_ema", gs, 0)):
        ckpt[key] = from_official(variables, names[i], shapes[i], f"{path} ({key})")
    return ckpt


def load_official(path, device="cpu"):
    """NVIDIA's pretrained networks as this project's G, D and G_ema (from Gs), with w_avg from
    dlatent_avg and the noise_mode="const" maps from noise0...; returns G, D, G_ema and info (res,
    alpha, cur_nimg, as load_generator)."""
    ckpt = read_official(path)
    cfg = StyleGANConfig(**ckpt["config"])
    with torch.device("meta"):  # no random init to throw away: the file fills every tensor
        nets = Generator(cfg), Discriminator(cfg), Generator(cfg)
    for net, key in zip(nets, ("G", "D", "G_ema")):
        net.load_state_dict(ckpt[key], assign=True)
    G, D, G_ema = (net.to(device) for net in nets)
    return G, D, G_ema.eval().requires_grad_(False), {k: ckpt[k] for k in ("res", "alpha", "cur_nimg")}


class OfficialPickler(pickle._Pickler):  # the pure-Python pickler: its save_global can be replaced
    """Writes each global under the name official files use (numpy.core, also under numpy 2), so that
    their loaders read ours; only OFFICIAL_GLOBALS can be written."""

    def save_global(self, obj, name=None):
        module, name = OFFICIAL_NAMES[obj]
        self.save(module)
        self.save(name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def to_official(state, names):
    """A state dict -> {official name: float32 array}, in TF's layouts."""
    return {n: relayout(k, state[k].detach().cpu().float(), TORCH_TO_TF).numpy() for k, n in names.items()}


def official_network(name, func, variables, kwargs, src, **components):
    return OfficialNetwork(version=3, name=name, static_kwargs=dict(kwargs), components=components,
                           build_module_src=src, build_func_name=func, variables=variables)


def official_generator(name, state, cfg, kwargs, lod, src):
    """G_style's record and its components G_synthesis and G_mapping (created in that order)."""
    v = to_official(state, official_names(cfg)[0])
    syn_vars, map_vars = ([(n[len(s):], a) for n, a in v.items() if n.startswith(s)]
                          for s in ("G_synthesis/", "G_mapping/"))
    broadcast = cfg.num_ws if getattr(cfg, "use_styles", True) else 1  # the ws that G_synthesis takes
    map_kwargs = {**kwargs, "dlatent_broadcast": broadcast}
    return official_network(
        name, "G_style", [("lod", lod), ("dlatent_avg", v["dlatent_avg"])], kwargs, src,
        synthesis=official_network("G_synthesis", "G_synthesis", [("lod", lod)] + syn_vars, kwargs, src),
        mapping=official_network("G_mapping", "G_mapping", map_vars, map_kwargs, src))


def save_official(path, ckpt, build_src=None):
    """A train.py checkpoint (config, G, D, G_ema) -> NVIDIA's pickle format with the same state
    layout, so read_official(path) gives every tensor back exactly. build_src: the text of the
    official networks_stylegan.py, which TensorFlow executes to rebuild the networks; without it a
    placeholder that says so (loaders that read only the variables never look at it)."""
    if not {"config", "G", "D", "G_ema"} <= ckpt.keys():
        raise ValueError("needs a full train.py checkpoint (ckpt.pt: config, G, D, G_ema); snapshot-*.pt "
                         "and best.pt hold G_ema only")
    if build_src is not None and not all(f"def {f}(" in build_src for f in OFFICIAL_FUNCS):
        raise ValueError(f"the build source does not define {', '.join(OFFICIAL_FUNCS)}: it is not "
                         f"networks_stylegan.py")
    cfg, src = StyleGANConfig(**ckpt["config"]), build_src or OFFICIAL_PLACEHOLDER_SRC
    lod = np.float32(cfg.log2_res - math.log2(ckpt.get("res") or cfg.resolution) + 1 - ckpt.get("alpha", 1.0))
    renamed = {v: k for k, v in OFFICIAL_RENAMES.items()}
    kwargs = dict(label_size=0, **{renamed.get(k, k): v for k, v in cfg.to_dict().items()})
    d = list(to_official(ckpt["D"], official_names(cfg)[1]).items())
    nets = (official_generator("G", ckpt["G"], cfg, kwargs, lod, src),
            official_network("D", "D_basic", [("lod", lod)] + d, kwargs, src),
            official_generator("Gs", ckpt["G_ema"], cfg, kwargs, lod, src))
    with open(path, "wb") as f:
        OfficialPickler(f, protocol=4).dump(nets)  # protocol 4: arrays as the official files hold them


# ----------------------------------------------------------------------------------------------
# Checkpoints (written by train.py): the config travels with the weights.

def read_checkpoint(path, device="cpu"):
    """A train.py checkpoint, or one of NVIDIA's .pkl files (read_official) -> the checkpoint dict:
    config, state dicts G, D and G_ema (a snapshot holds G_ema only), res, alpha, cur_nimg."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint not found: {path}")
    if path.endswith(".pkl"):
        return read_official(path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable torch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise ValueError(f"{path} is not a stylegan train.py checkpoint (no 'config')")
    return ckpt


def config_from_dict(config, source):
    """A checkpoint's config -> StyleGANConfig, or a one-line ValueError naming what is wrong."""
    if not isinstance(config, dict):
        raise ValueError(f"{source} has no config dict; it is not a stylegan train.py checkpoint")
    unknown = sorted(set(config) - set(StyleGANConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{source}: its config has unknown key(s) {', '.join(map(str, unknown))}; it was "
                         f"written by another version of stylegan.py, or edited")
    try:
        return StyleGANConfig(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: its config is invalid ({e})") from None


def check_weights(net, state, source, key):
    """A one-line ValueError when the state dict `key` does not fit `net` (where load_state_dict
    raises a many-line RuntimeError): the config and the weights come from different networks."""
    if not isinstance(state, dict):
        raise ValueError(f"{source} has no {key} weights")
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in state.items()}
    missing, unexpected = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    shapes = [f"{k} {got[k]} in the file, {want[k]} for the config" for k in sorted(want.keys() & got.keys())
              if got[k] != want[k]]
    wrong = [f"{len(names)} {what}, e.g. {names[0]}" for names, what in
             ((missing, "missing"), (unexpected, "unexpected"), (shapes, "of another shape")) if names]
    if wrong:
        raise ValueError(f"{source}: the {key} weights do not match its config ({'; '.join(wrong)}); the file "
                         f"was edited or mixes two runs")


def check_checkpoint(ckpt, source, keys=("G", "D", "G_ema")):
    """The config and the networks `keys` of a checkpoint (those present when keys is None) agree,
    checked on shapes alone: meta tensors take no memory and no time. Returns the config."""
    cfg = config_from_dict(ckpt.get("config"), source)
    with torch.device("meta"):
        nets = {"G": Generator(cfg), "D": Discriminator(cfg)}
    for key in keys or [k for k in ("G", "D", "G_ema") if k in ckpt]:
        check_weights(nets[key[0]], ckpt.get(key), source, key)
    return cfg


def load_generator(path, which="G_ema", device="cpu"):
    """Rebuild a generator from a train.py checkpoint (or an official .pkl) alone. Returns (G, info)
    where info holds the resolution and alpha the run had reached and the images shown."""
    ckpt = read_checkpoint(path, device)
    if which not in ckpt:
        raise ValueError(f"{path} is not a stylegan train.py checkpoint (no '{which}')")
    G = Generator(config_from_dict(ckpt["config"], path)).to(device)
    check_weights(G, ckpt[which], path, which)
    G.load_state_dict(ckpt[which])
    G.eval().requires_grad_(False)
    info = {k: ckpt.get(k) for k in ("res", "alpha", "cur_nimg")}
    info["res"] = info["res"] or G.cfg.resolution
    info["alpha"] = 1.0 if info["alpha"] is None else info["alpha"]
    return G, info
