"""Fused per-layer operations of StyleGAN, each a Triton kernel beside its plain PyTorch reference.

    noise_adain(x, noise, noise_weight, bias, scale, shift)   the synthesis layer epilogue
    bias_lrelu(x, bias)                                       mapping network and discriminator

The reference `*_ref` functions are the specification; the Triton versions must match them.
`impl="auto"` uses Triton on CUDA tensors (or everywhere under TRITON_INTERPRET=1) and the
reference otherwise. `kernels.IMPL` (or the env var STYLEGAN_IMPL) forces one path model-wide.
"""
import os

import torch
import torch.nn.functional as F

IMPL = os.environ.get("STYLEGAN_IMPL", "auto")  # "auto" | "triton" | "ref"


# ----------------------------------------------------------------------------------------------
# References (the specification)

def noise_adain_ref(x, noise, noise_weight, bias, scale, shift, slope=0.2, eps=1e-8):
    """StyleGAN layer epilogue (official order): + noise * weight[c], + bias[c], leaky ReLU,
    instance norm over H, W (biased variance, fp32), then style: y * scale[n, c] + shift[n, c].
    x [N, C, H, W]; noise [N, 1, H, W] or None; noise_weight, bias [C]; scale, shift [N, C]."""
    u = x.float()
    if noise is not None:
        u = u + noise_weight.float().view(1, -1, 1, 1) * noise.float()
    u = u + bias.float().view(1, -1, 1, 1)
    t = F.leaky_relu(u, slope)
    mean = t.mean(dim=(2, 3), keepdim=True)
    var = (t - mean).square().mean(dim=(2, 3), keepdim=True)
    y = (t - mean) * torch.rsqrt(var + eps)
    y = y * scale.float()[:, :, None, None] + shift.float()[:, :, None, None]
    return y.to(x.dtype)


def bias_lrelu_ref(x, bias, slope=0.2, gain=1.0):
    """y = leaky_relu(x + bias[c]) * gain for x [N, C] or [N, C, H, W]."""
    b = bias.to(x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
    y = F.leaky_relu(x + b, slope)
    return y * gain if gain != 1.0 else y


# ----------------------------------------------------------------------------------------------
# Public ops

def _use_triton(x, impl):
    impl = IMPL if impl == "auto" else impl
    if impl == "ref":
        return False
    if impl == "triton":
        raise RuntimeError("impl='triton' requested, but the Triton kernels are not written yet")
    return False


def noise_adain(x, noise, noise_weight, bias, scale, shift, *, slope=0.2, eps=1e-8, impl="auto"):
    if _use_triton(x, impl):
        raise NotImplementedError
    return noise_adain_ref(x, noise, noise_weight, bias, scale, shift, slope, eps)


def bias_lrelu(x, bias, *, slope=0.2, gain=1.0, impl="auto"):
    if _use_triton(x, impl):
        raise NotImplementedError
    return bias_lrelu_ref(x, bias, slope, gain)
