"""Fused per-layer operations of StyleGAN, each a Triton kernel beside its plain PyTorch reference.

    noise_adain(x, noise, noise_weight, bias, scale, shift)   the synthesis layer epilogue
    bias_lrelu(x, bias)                                       mapping network and discriminator
    bias_lrelu_blur(x, bias)                                  discriminator: bias_lrelu, then blur2d
    bias_lrelu_pool(x, bias)                                  discriminator: 2x2 average, then bias_lrelu
    minibatch_stddev(x, group_size, num_features)             discriminator: the stddev maps at 4x4
    blur2d(x), conv2d(x, w)                                   resampling filter and convolutions
    scale_weights(tensors, scales)                            equalized-lr weights (x scale, autocast dtype)

The synthesis epilogue of StyleGAN (Karras et al. 2018, sec. 2 and fig. 1) is
    u = x + noise_weight[c] * noise + bias[c];  t = leaky_relu(u, 0.2)
    y = scale[n, c] * (t - mean_hw(t)) / sqrt(var_hw(t) + eps) + shift[n, c]      (AdaIN, eq. 1)
which eager PyTorch runs as five or six passes over memory. The epilogues take w_scale, the
equalized-lr scale of the convolution before them, and compute with w_scale * x, so that layer can
run with its unscaled weight (stylegan.py's scale_after). Here it is one read of x and noise and
one write of y when a plane fits one program (up to SPLIT_HW elements: 64x64), and two reads and
one write when a larger plane is split across programs (a first pass writes per-chunk statistics,
which one small launch combines).

blur2d and conv2d are plain torch convolutions with hand-written gradients: R1 differentiates the
discriminator twice, and autograd's convolution double backward computes each weight gradient as a
convolution whose filter is a whole gradient map, once per group for the depthwise blur (about 2,000
tiny convolutions per 1024 step, for a filter that needs no gradient at all).

The reference `*_ref` functions are the specification; the Triton versions must match them
(tests/test_kernels.py). `impl="auto"` uses Triton on CUDA tensors (or on any tensor under
TRITON_INTERPRET=1, which is how the tests run on a CPU) and the reference otherwise, so the module
imports and works without triton (macOS); blur2d and conv2d use their Functions on any device.
`kernels.IMPL` (or the env var STYLEGAN_IMPL) forces one path model-wide ("ref": every reference,
under plain autograd); an explicit `impl=` argument beats it. Tests: `python -m pytest tests/test_kernels.py`.
"""
import functools
import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # no triton wheel (macOS, Windows): the references still work
    HAS_TRITON = False

IMPL = os.environ.get("STYLEGAN_IMPL", "auto")  # "auto" | "triton" | "ref"
# triton.jit reads TRITON_INTERPRET when a kernel is decorated, so the import-time value is the one
# that decides whether kernels run on CPU tensors.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Planes with more elements than SPLIT_HW are split across programs (two passes over x); smaller
# ones are normalized by one program in a single pass. 4096 elements keep a few fp32 tiles in
# registers at 8 warps; a 1024x1024 plane becomes 256 programs. Tests lower it to force splitting.
SPLIT_HW = 4096
# Small planes (4x4, 8x8) are batched several per program until a program holds this many elements.
BATCH_TILE = 1024
# Elements per program of the elementwise bias + leaky ReLU kernels.
ELEMWISE_TILE = 2048


# ----------------------------------------------------------------------------------------------
# References (the specification)

def noise_adain_ref(x, noise, noise_weight, bias, scale, shift, slope=0.2, eps=1e-8, w_scale=1.0):
    """StyleGAN layer epilogue (official order): + noise * weight[c], + bias[c], leaky ReLU,
    instance norm over H, W (biased variance, fp32), then style: y * scale[n, c] + shift[n, c].
    x [N, C, H, W]; noise [N, 1, H, W] or None; noise_weight, bias [C]; scale, shift [N, C].
    w_scale: x is a convolution made with unscaled weights, and the layer's equalized-lr scale is
    applied here (w_scale * x), in the same op as the first addition."""
    acc = torch.promote_types(x.dtype, torch.float32)  # fp32, or fp64 for fp64 x (exact tests)
    u = x.to(acc) if w_scale == 1.0 else x.to(acc) * w_scale  # x first: the result keeps x's layout
    if noise is not None:
        u = u + noise_weight.to(acc).view(1, -1, 1, 1) * noise.to(acc)
    u = u + bias.to(acc).view(1, -1, 1, 1)
    t = F.leaky_relu(u, slope)
    mean = t.mean(dim=(2, 3), keepdim=True)
    var = (t - mean).square().mean(dim=(2, 3), keepdim=True)
    y = (t - mean) * torch.rsqrt(var + eps)
    y = y * scale.to(acc)[:, :, None, None] + shift.to(acc)[:, :, None, None]
    return y.to(x.dtype)


def bias_lrelu_ref(x, bias, slope=0.2, gain=1.0, w_scale=1.0):
    """y = leaky_relu(w_scale * x + bias[c]) * gain for x [N, C] or [N, C, H, W], computed in fp32 (a
    bf16 x under autocast meets the fp32 bias unrounded) and returned in x's dtype. w_scale: the
    equalized-lr scale of the layer that made x with unscaled weights."""
    acc = torch.promote_types(x.dtype, torch.float32)
    u = x.to(acc) if w_scale == 1.0 else x.to(acc) * w_scale  # x first: the result keeps x's layout
    y = F.leaky_relu(u + bias.to(acc).view(1, -1, *([1] * (x.ndim - 2))), slope)
    return (y * gain if gain != 1.0 else y).to(x.dtype)


@functools.lru_cache(maxsize=None)
def blur_filter(device, dtype):  # cached: a fresh torch.tensor per call would copy (and sync) per layer
    f = torch.tensor([1.0, 2.0, 1.0], dtype=dtype)
    return ((f[:, None] * f[None, :]) / 16).to(device)


def blur2d_ref(x):
    """[1, 2, 1] x [1, 2, 1] / 16 depthwise low-pass, zero 'same' padding (official blur2d)."""
    C = x.shape[1]
    return F.conv2d(x, blur_filter(x.device, x.dtype).expand(C, 1, 3, 3), padding=1, groups=C)


def bias_lrelu_blur_ref(x, bias, slope=0.2, gain=1.0, w_scale=1.0):
    """blur2d_ref(bias_lrelu_ref(x, bias)): a discriminator block's first layer before it downsamples."""
    return blur2d_ref(bias_lrelu_ref(x, bias, slope, gain, w_scale))


def bias_lrelu_pool_ref(x, bias, slope=0.2, gain=1.0, w_scale=1.0):
    """bias_lrelu_ref(avg_pool2d(x, 2), bias): a discriminator block's downsampling layer below
    FUSED_FROM after its conv (the official conv, 2x2 average, bias, leaky ReLU)."""
    return bias_lrelu_ref(F.avg_pool2d(x, 2), bias, slope, gain, w_scale)


def minibatch_stddev_ref(x, group_size=4, num_features=1):
    """ProGAN section 3 (official minibatch_stddev_layer): x [N, C, H, W] with N a multiple of
    group_size G; sample g * M + m (M = N / G) is in group m. Per group, the stddev over its G
    samples of each element (biased variance + 1e-8, in fp32), averaged over each of num_features
    slices of C / num_features channels and all positions, is appended as num_features constant maps."""
    N, C, H, W = x.shape
    G, n = group_size, num_features
    y = x.to(torch.promote_types(x.dtype, torch.float32)).reshape(G, -1, n, C // n, H, W)  # [G, M, n, c, H, W]
    # the mean square deviation written out: torch.var's reduction over the leading axis takes 6.5 ms per
    # call on a CPU at [16, 512, 4, 4] where this takes 0.7 (forward and backward; 2 cores, 2026-12-01)
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))                             # [M, n]
    y = y.to(x.dtype)[None, :, :, None, None].expand(G, -1, -1, H, W)     # [G, M, n, H, W]
    return torch.cat([x.view(G, -1, C, H, W), y], dim=2).view(N, C + n, H, W)


def conv2d_ref(x, w, stride=1, padding=0, transposed=False):
    """conv2d(x, w), or conv_transpose2d(x, w) with w [C_in, C_out, kh, kw]; no bias, groups or
    dilation (all that StyleGAN's convolutions use)."""
    if transposed:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding)
    return F.conv2d(x, w, stride=stride, padding=padding)


# ----------------------------------------------------------------------------------------------
# Triton kernels: noise + bias + leaky ReLU + instance norm + style (AdaIN)
#
# Every kernel sees a [N, C, H, W] tensor as planes (n, c) of HW = H * W elements at address
# n * sn + c * sc + hw * shw, which covers NCHW (shw = 1), channels_last (sc = 1) and a noise map
# expanded over the batch (sn = 0). A program owns a tile of BLOCK_C channels of one sample times
# BLOCK_HW positions: whole planes (n_chunks == 1, small planes batched several per program) or
# chunk `chunk` of a plane split into n_chunks. Program ids enumerate (n, channel block, chunk),
# chunk fastest, on one grid axis (no 65535 limit).

if HAS_TRITON:

    @triton.jit
    def _adain_tile(pid, C, HW, n_cblocks, n_chunks, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        """The sample, channels, positions and masks of program `pid`."""
        chunk = pid % n_chunks
        pb = pid // n_chunks
        n = (pb // n_cblocks).to(tl.int64)
        c = (pb % n_cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
        hw = chunk * BLOCK_HW + tl.arange(0, BLOCK_HW)          # [BLOCK_HW]
        c_ok = c < C
        hw_ok = hw < HW
        mask = c_ok[:, None] & hw_ok[None, :]                    # [BLOCK_C, BLOCK_HW]
        return n, c, hw, chunk, c_ok, hw_ok, mask

    @triton.jit
    def _adain_offsets(n, c, hw, sn, sc, shw):
        """int64 element offsets of a tile: a 1024x1024 layer can pass 2**31 elements."""
        return n * sn + c.to(tl.int64)[:, None] * sc + hw.to(tl.int64)[None, :] * shw

    @triton.jit
    def _adain_input(X, NOISE, NW, B, n, c, hw, c_ok, hw_ok, mask, HW, W, x_sn, x_sc, x_shw, nz_sn, nz_shw,
                     xs, HAS_NOISE: tl.constexpr, BLUR: tl.constexpr, BLOCK_HW: tl.constexpr):
        """u = xs * x + noise_weight[c] * noise + bias[c] in fp32 for one tile (xs: the equalized-lr
        scale of the convolution that made x), the tile's noise row (zeros without noise) and the
        tile's offsets into x. BLUR: x is first blurred, blur2d_ref's [1,2,1] x [1,2,1] / 16 with zero
        padding, from each position's 3x3 neighbourhood in memory."""
        offs = _adain_offsets(n, c, hw, x_sn, x_sc, x_shw)
        if BLUR:
            w = hw % W
            u = tl.zeros(mask.shape, dtype=tl.float32)
            for i in tl.static_range(9):  # (2 - dh^2)(2 - dw^2) / 16: 1, 2 or 4 sixteenths
                dh, dw = i // 3 - 1, i % 3 - 1
                row = hw + dh * W  # the same column dh rows away; inside the plane iff 0 <= row < HW
                ok = mask & ((row >= 0) & (row < HW) & (w + dw >= 0) & (w + dw < W))[None, :]
                tap = tl.load(X + _adain_offsets(n, c, row + dw, x_sn, x_sc, x_shw), mask=ok, other=0.0)
                u += tap.to(tl.float32) * ((2 - dh * dh) * (2 - dw * dw) / 16.0)
        else:
            u = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        u = u * xs
        nz = tl.zeros([BLOCK_HW], dtype=tl.float32)
        if HAS_NOISE:
            nz = tl.load(NOISE + n * nz_sn + hw.to(tl.int64) * nz_shw, mask=hw_ok, other=0.0)
            nz = nz.to(tl.float32)
            nw = tl.load(NW + c, mask=c_ok, other=0.0).to(tl.float32)
            u = u + nw[:, None] * nz[None, :]
        b = tl.load(B + c, mask=c_ok, other=0.0).to(tl.float32)
        u = u + b[:, None]
        return u, nz, offs

    @triton.jit
    def _adain_stats_kernel(
        X,           # [N, C, H, W] input (strides x_sn, x_sc, x_shw), any float dtype
        NOISE,       # [N, 1, H, W] noise (strides nz_sn, nz_shw), read only when HAS_NOISE
        NW, B,       # [C] noise weight and bias
        CMEAN, CM2,  # [N * C, n_chunks] fp32 out: mean and sum of squared deviations per chunk
        C, HW, W, n_cblocks, n_chunks, x_sn, x_sc, x_shw, nz_sn, nz_shw, slope, xs,
        HAS_NOISE: tl.constexpr, BLUR: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """First pass for split planes: per-chunk (mean, M2), combined later with Chan et al.'s
        parallel formula, which stays accurate where sum(t^2) - sum(t)^2 / n would cancel."""
        pid = tl.program_id(0)
        n, c, hw, chunk, c_ok, hw_ok, mask = _adain_tile(pid, C, HW, n_cblocks, n_chunks, BLOCK_C, BLOCK_HW)
        u, nz, offs = _adain_input(X, NOISE, NW, B, n, c, hw, c_ok, hw_ok, mask, HW, W, x_sn, x_sc, x_shw,
                                   nz_sn, nz_shw, xs, HAS_NOISE, BLUR, BLOCK_HW)
        t = tl.where(u > 0, u, u * slope)
        count = tl.minimum(HW - chunk * BLOCK_HW, BLOCK_HW).to(tl.float32)
        cmean = tl.sum(tl.where(mask, t, 0.0), axis=1) / count
        d = tl.where(mask, t - cmean[:, None], 0.0)
        out = (n * C + c) * n_chunks + chunk
        tl.store(CMEAN + out, cmean, mask=c_ok)
        tl.store(CM2 + out, tl.sum(d * d, axis=1), mask=c_ok)

    @triton.jit
    def _adain_combine_stats_kernel(
        CMEAN, CM2,  # [R, n_chunks] fp32 per-chunk mean and M2 of R = N * C planes (_adain_stats_kernel)
        MEAN, RSTD,  # [R] fp32 out: plane mean and 1 / sqrt(var + eps)
        R, HW, n_chunks, chunk_hw, eps,
        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        """Chan et al. (1979), with n_k = min(HW - k * chunk_hw, chunk_hw) the true size of chunk k
        (the last may be partial):  mean = sum_k n_k mean_k / HW,
        M2 = sum_k M2_k + sum_k n_k (mean_k - mean)^2,  var = M2 / HW. One launch for all planes
        instead of a dozen small torch ops per split layer."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
        r_ok = r < R
        row = r.to(tl.int64)[:, None] * n_chunks
        acc = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, n_chunks, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)                        # [BLOCK_K]
            mask = r_ok[:, None] & (k < n_chunks)[None, :]
            count = tl.minimum(HW - k * chunk_hw, chunk_hw).to(tl.float32)
            acc += tl.load(CMEAN + row + k[None, :], mask=mask, other=0.0) * count[None, :]
        mean = tl.sum(acc, axis=1) / HW
        acc = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, n_chunks, BLOCK_K):  # a second pass: the deviations need the plane mean
            k = k0 + tl.arange(0, BLOCK_K)
            mask = r_ok[:, None] & (k < n_chunks)[None, :]
            count = tl.minimum(HW - k * chunk_hw, chunk_hw).to(tl.float32)
            cmean = tl.load(CMEAN + row + k[None, :], mask=mask, other=0.0)
            d = tl.where(mask, cmean - mean[:, None], 0.0)
            acc += tl.load(CM2 + row + k[None, :], mask=mask, other=0.0) + count[None, :] * d * d
        tl.store(MEAN + r, mean, mask=r_ok)
        tl.store(RSTD + r, 1.0 / tl.sqrt(tl.sum(acc, axis=1) / HW + eps), mask=r_ok)

    @triton.jit
    def _adain_fwd_kernel(
        X, Y,          # [N, C, H, W] input and output, same strides (x_sn, x_sc, x_shw); y in x's dtype
        NOISE,         # [N, 1, H, W] noise (strides nz_sn, nz_shw), read only when HAS_NOISE
        NW, B,         # [C] noise weight and bias
        SCALE, SHIFT,  # [N, C] style scale (ys + 1) and shift (yb), contiguous
        MEAN, RSTD,    # [N, C] fp32 plane statistics: read when HAS_STATS (split planes), else written
        C, HW, W, n_cblocks, n_chunks, x_sn, x_sc, x_shw, nz_sn, nz_shw, slope, xs, eps,
        HAS_NOISE: tl.constexpr, BLUR: tl.constexpr, HAS_STATS: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        n, c, hw, chunk, c_ok, hw_ok, mask = _adain_tile(pid, C, HW, n_cblocks, n_chunks, BLOCK_C, BLOCK_HW)
        u, nz, offs = _adain_input(X, NOISE, NW, B, n, c, hw, c_ok, hw_ok, mask, HW, W, x_sn, x_sc, x_shw,
                                   nz_sn, nz_shw, xs, HAS_NOISE, BLUR, BLOCK_HW)
        t = tl.where(u > 0, u, u * slope)
        nc = n * C + c  # [BLOCK_C] index into the [N, C] arrays
        if HAS_STATS:
            mean = tl.load(MEAN + nc, mask=c_ok, other=0.0)
            rstd = tl.load(RSTD + nc, mask=c_ok, other=0.0)
        else:  # the tile holds whole planes: exact two-pass statistics from registers
            mean = tl.sum(tl.where(mask, t, 0.0), axis=1) / HW
            d = tl.where(mask, t - mean[:, None], 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / HW + eps)
            tl.store(MEAN + nc, mean, mask=c_ok)
            tl.store(RSTD + nc, rstd, mask=c_ok)
        s = tl.load(SCALE + nc, mask=c_ok, other=0.0).to(tl.float32)
        h = tl.load(SHIFT + nc, mask=c_ok, other=0.0).to(tl.float32)
        y = (t - mean[:, None]) * rstd[:, None] * s[:, None] + h[:, None]
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)

    # Backward. Per plane (n, c) with M = HW elements, xhat = (t - mean) * rstd and
    # y = s * xhat + h (s = scale[n, c], h = shift[n, c]), g = dL/dy:
    #   dh = sum_i g_i                      ds = sum_i g_i * xhat_i
    # The instance norm backward (as for layer norm, Triton tutorial 05) with dxhat = s * g:
    #   dt_i = rstd * (dxhat_i - mean_j(dxhat_j) - xhat_i * mean_j(dxhat_j * xhat_j))
    #        = s * rstd * (g_i - (dh + xhat_i * ds) / M)
    # then through the leaky ReLU and the sum u = xs * x + w[c] * noise + b[c]:
    #   du_i = dt_i * (1 if u_i > 0 else slope),  dx_i = xs * du_i
    #   db[c] = sum_{n, i} du_i     dw[c] = sum_{n, i} du_i * noise_i     dnoise_i = sum_c du_i * w[c]
    # t and xhat are recomputed from x (and the saved [N, C] mean and rstd) rather than stored.
    # dh and ds need the whole plane before any dx can be written: a tile holding whole planes sums
    # them itself; split planes get them from a first pass (_adain_bwd_sums_kernel) whose per-chunk
    # partials _sum_partials_kernel adds up. db and dw are written as per-(plane, chunk)
    # partial sums that the same kernel reduces over n and chunks.

    @triton.jit
    def _adain_recompute(X, G, NOISE, NW, B, MEAN, RSTD, n, c, hw, c_ok, hw_ok, mask, C, HW, W, x_sn, x_sc,
                         x_shw, g_sn, g_sc, g_shw, nz_sn, nz_shw, slope, xs, HAS_NOISE: tl.constexpr,
                         BLUR: tl.constexpr, BLOCK_HW: tl.constexpr):
        """The backward's view of a tile: u and xhat recomputed from x and the saved statistics
        (nothing but [N, C] mean and rstd is kept from the forward), and g = dL/dy in fp32."""
        u, nz, offs = _adain_input(X, NOISE, NW, B, n, c, hw, c_ok, hw_ok, mask, HW, W, x_sn, x_sc, x_shw,
                                   nz_sn, nz_shw, xs, HAS_NOISE, BLUR, BLOCK_HW)
        t = tl.where(u > 0, u, u * slope)
        nc = n * C + c
        mean = tl.load(MEAN + nc, mask=c_ok, other=0.0)
        rstd = tl.load(RSTD + nc, mask=c_ok, other=0.0)
        xhat = (t - mean[:, None]) * rstd[:, None]
        g = tl.load(G + _adain_offsets(n, c, hw, g_sn, g_sc, g_shw), mask=mask, other=0.0).to(tl.float32)
        return u, nz, offs, nc, rstd, xhat, g

    @triton.jit
    def _adain_bwd_sums_kernel(
        X,                 # [N, C, H, W] forward input (strides x_sn, x_sc, x_shw)
        G,                 # [N, C, H, W] gradient of y (strides g_sn, g_sc, g_shw)
        NOISE, NW, B,      # as in _adain_fwd_kernel
        MEAN, RSTD,        # [N, C] fp32 statistics saved by the forward
        PDSHIFT, PDSCALE,  # [N * C, n_chunks] fp32 out: per-chunk sums of g and g * xhat
        C, HW, W, n_cblocks, n_chunks, x_sn, x_sc, x_shw, g_sn, g_sc, g_shw, nz_sn, nz_shw, slope, xs,
        HAS_NOISE: tl.constexpr, BLUR: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        n, c, hw, chunk, c_ok, hw_ok, mask = _adain_tile(pid, C, HW, n_cblocks, n_chunks, BLOCK_C, BLOCK_HW)
        u, nz, offs, nc, rstd, xhat, g = _adain_recompute(
            X, G, NOISE, NW, B, MEAN, RSTD, n, c, hw, c_ok, hw_ok, mask, C, HW, W, x_sn, x_sc, x_shw,
            g_sn, g_sc, g_shw, nz_sn, nz_shw, slope, xs, HAS_NOISE, BLUR, BLOCK_HW)
        out = nc * n_chunks + chunk
        tl.store(PDSHIFT + out, tl.sum(g, axis=1), mask=c_ok)
        tl.store(PDSCALE + out, tl.sum(g * xhat, axis=1), mask=c_ok)

    @triton.jit
    def _adain_bwd_kernel(
        X, DX,             # [N, C, H, W] forward input and its gradient, same strides; dx in x's dtype
        G,                 # [N, C, H, W] gradient of y (strides g_sn, g_sc, g_shw)
        NOISE, NW, B,      # as in _adain_fwd_kernel
        SCALE,             # [N, C] style scale, contiguous
        MEAN, RSTD,        # [N, C] fp32 statistics saved by the forward
        DSHIFT, DSCALE,    # [N, C] fp32 dh and ds: read when HAS_SUMS (split planes), else written
        PDB, PDW,          # [N * C, n_chunks] fp32 out: partial sums of du and du * noise
        C, HW, W, n_cblocks, n_chunks, x_sn, x_sc, x_shw, g_sn, g_sc, g_shw, nz_sn, nz_shw, slope, xs,
        HAS_NOISE: tl.constexpr, BLUR: tl.constexpr, HAS_SUMS: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
    ):
        pid = tl.program_id(0)
        n, c, hw, chunk, c_ok, hw_ok, mask = _adain_tile(pid, C, HW, n_cblocks, n_chunks, BLOCK_C, BLOCK_HW)
        u, nz, offs, nc, rstd, xhat, g = _adain_recompute(
            X, G, NOISE, NW, B, MEAN, RSTD, n, c, hw, c_ok, hw_ok, mask, C, HW, W, x_sn, x_sc, x_shw,
            g_sn, g_sc, g_shw, nz_sn, nz_shw, slope, xs, HAS_NOISE, BLUR, BLOCK_HW)
        if HAS_SUMS:
            dh = tl.load(DSHIFT + nc, mask=c_ok, other=0.0)
            ds = tl.load(DSCALE + nc, mask=c_ok, other=0.0)
        else:  # masked g is 0, so masked lanes add nothing
            dh = tl.sum(g, axis=1)
            ds = tl.sum(g * xhat, axis=1)
            tl.store(DSHIFT + nc, dh, mask=c_ok)
            tl.store(DSCALE + nc, ds, mask=c_ok)
        s = tl.load(SCALE + nc, mask=c_ok, other=0.0).to(tl.float32)
        dt = (s * rstd)[:, None] * (g - (dh[:, None] + xhat * ds[:, None]) / HW)
        du = tl.where(mask, tl.where(u > 0, dt, dt * slope), 0.0)
        tl.store(DX + offs, (du * xs).to(DX.dtype.element_ty), mask=mask)  # x enters u as xs * x
        out = nc * n_chunks + chunk
        tl.store(PDB + out, tl.sum(du, axis=1), mask=c_ok)
        if HAS_NOISE:
            tl.store(PDW + out, tl.sum(du * nz[None, :], axis=1), mask=c_ok)

    @triton.jit
    def _sum_partials_kernel(
        P, Q,           # [N, R, n_chunks] fp32 (fp64) partial sums (Q read only when HAS_Q)
        P_SUM, Q_SUM,   # [R] out, P's dtype: P and Q summed over n and chunks
        N, R, n_chunks,
        HAS_Q: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        """Two reductions in one launch: dh and ds per plane from per-chunk partials (N = 1, R = the
        N * C planes), or db and dw per channel from per-(plane, chunk) partials (R = C); also the
        bias gradient of _lrelu_grad_kernel from its per-tile partials."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
        r_ok = r < R
        p = tl.zeros([BLOCK_R, BLOCK_K], dtype=P_SUM.dtype.element_ty)
        q = tl.zeros([BLOCK_R, BLOCK_K], dtype=P_SUM.dtype.element_ty)
        for n in range(N):
            row = (n * R + r).to(tl.int64)[:, None] * n_chunks
            for k0 in range(0, n_chunks, BLOCK_K):
                k = k0 + tl.arange(0, BLOCK_K)                    # [BLOCK_K]
                mask = r_ok[:, None] & (k < n_chunks)[None, :]
                p += tl.load(P + row + k[None, :], mask=mask, other=0.0)
                if HAS_Q:
                    q += tl.load(Q + row + k[None, :], mask=mask, other=0.0)
        tl.store(P_SUM + r, tl.sum(p, axis=1), mask=r_ok)
        if HAS_Q:
            tl.store(Q_SUM + r, tl.sum(q, axis=1), mask=r_ok)

    # ------------------------------------------------------------------------------------------
    # Triton kernels: bias + leaky ReLU, and its gradient (itself differentiable, for R1)

    # The row kernels (this one, its gradient, and D's with the blur or the 2x2 average) see a dense
    # tensor as rows [R, L] in memory order: NCHW rows are one channel's plane (BIAS_PER_ROW, PER_ROW;
    # channel r % C), else ([N, C] or channels_last) one position's channels (channel l).

    @triton.jit
    def _row_tile(R, L, n_lblocks, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
        """This program's tile: its row and column blocks, rows, columns, mask and int64 offsets."""
        pid = tl.program_id(0)
        rb, lb = pid // n_lblocks, pid % n_lblocks
        r = rb * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
        l = lb * BLOCK_L + tl.arange(0, BLOCK_L)  # [BLOCK_L]
        mask = (r < R)[:, None] & (l < L)[None, :]
        return rb, lb, r, l, mask, r.to(tl.int64)[:, None] * L + l[None, :]

    @triton.jit
    def _row_bias(B, r, l, R, L, C, PER_ROW: tl.constexpr):
        """The bias of a tile's elements, broadcastable to the tile."""
        if PER_ROW:
            b = tl.load(B + r % C, mask=r < R, other=0.0)[:, None]
        else:
            b = tl.load(B + l, mask=l < L, other=0.0)[None, :]
        return b

    @triton.jit
    def _store_row_sums(PDB, t, rb, lb, r, l, R, L, n_lblocks, PER_ROW: tl.constexpr):
        """A tile's per-channel partial sums of t (zero where masked): per row into PDB [R, n_lblocks]
        (NCHW), else per column into PDB [n_rblocks, L]; _sum_row_partials adds them up."""
        if PER_ROW:
            tl.store(PDB + r.to(tl.int64) * n_lblocks + lb, tl.sum(t, axis=1), mask=r < R)
        else:
            tl.store(PDB + rb.to(tl.int64) * L + l, tl.sum(t, axis=0), mask=l < L)

    @triton.jit
    def _bias_lrelu_fwd_kernel(
        X, Y,  # [R, L] x and y in memory order (row-major, contiguous); y in x's dtype
        B,     # [C] bias; channel of element (r, l) is r % C if BIAS_PER_ROW (NCHW) else l ([N, C], NHWC)
        R, L, C, n_lblocks, slope, gain, xs,
        BIAS_PER_ROW: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        """y = leaky_relu(xs * x + b) * gain; xs: the equalized-lr scale of the layer that made x."""
        rb, lb, r, l, mask, offs = _row_tile(R, L, n_lblocks, BLOCK_R, BLOCK_L)
        v = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) * xs
        v = v + _row_bias(B, r, l, R, L, C, BIAS_PER_ROW).to(tl.float32)
        y = tl.where(v > 0, v, v * slope) * gain
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)

    # dL/dx = dL/dy * xs * gain * (1 if xs * x + b > 0 else slope). With gain > 0 and slope >= 0,
    # y > 0 exactly when xs * x + b > 0, so the saved output y carries the mask (and the next conv already
    # keeps y alive: no extra memory). The map g -> dx is linear in g with a mask whose derivative in
    # y is zero almost everywhere, so its own backward is the same kernel applied to the incoming
    # gradient: that is the second-order gradient R1 and WGAN-GP need.
    # The bias gradient db[c] = sum over n (and h, w) of dx / xs is summed here from the fp32 dx while it
    # is in registers: each program writes its tile's sums per channel (a row of the tile in NCHW,
    # a column in [N, C] and channels_last), and _sum_partials_kernel adds those up (one launch).
    @triton.jit
    def _lrelu_grad_kernel(
        G, Y, DX,  # [R, L] incoming gradient, forward output, result; one layout (as the forward's X)
        PDB,       # fp32 (fp64 for fp64 y) out, when SUM_BIAS: partial db, [R, n_lblocks] if BIAS_PER_ROW
                   # else [n_rblocks, L]
        R, L, n_lblocks, slope, gain, xs,
        SUM_BIAS: tl.constexpr, BIAS_PER_ROW: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        rb, lb, r, l, mask, offs = _row_tile(R, L, n_lblocks, BLOCK_R, BLOCK_L)
        g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(Y + offs, mask=mask, other=0.0).to(tl.float32)
        dx = tl.where(y > 0, g, g * slope) * gain  # 0 where masked; the gradient of xs * x + b
        tl.store(DX + offs, (dx * xs).to(DX.dtype.element_ty), mask=mask)
        if SUM_BIAS:
            _store_row_sums(PDB, dx.to(PDB.dtype.element_ty), rb, lb, r, l, R, L, n_lblocks, BIAS_PER_ROW)


    # ------------------------------------------------------------------------------------------
    # Triton kernel: the discriminator's bias + leaky ReLU + blur in one pass, and its gradients
    #
    # With u = xs * x + b (xs: the equalized-lr scale of the conv that made x), m = gain * (1 if u > 0
    # else slope) and B the [1,2,1] blur (zero padding; symmetric, so its own adjoint), the forward is
    # y = B(m * u) and its gradient dx = xs * m * B(dy): both are "blur after the mask" (B(m * v))
    # or "blur before it" (m * B(g)), times a constant, each the other's adjoint, so
    # the gradients of any order are these two again (R1's double backward included), the mask's
    # derivative being zero almost everywhere. One program reads its tile's 3x3 neighbourhoods
    # straight from memory, so y is written once instead of bias_lrelu writing it and the blur
    # reading it back. PER_ROW (NCHW): a row is one channel's plane and a tile spans positions in
    # it; else (channels_last) a row is one position's channels and the neighbours are whole rows.
    @triton.jit
    def _lrelu_blur_kernel(
        X, B, V, OUT,  # [R, L] rows in x's layout: conv output x, bias [C], values v (as x), result
        M,             # [4] (gain * slope, gain, xs, vs) in the compute dtype: exact in fp64 as well
        PDB,           # when SUM_BIAS: partial sums of OUT / vs, [R, n_lblocks] if PER_ROW else [n_rblocks, C]
        R, L, H, W, C, n_lblocks,
        BLUR_FIRST: tl.constexpr, FORWARD: tl.constexpr, SUM_BIAS: tl.constexpr, PER_ROW: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        """BLUR_FIRST: OUT = vs * m * B(V). Else OUT = vs * B(m * V), with V = u itself when FORWARD."""
        lo, hi, xs, vs = tl.load(M), tl.load(M + 1), tl.load(M + 2), tl.load(M + 3)
        rb, lb, r, l, mask, at = _row_tile(R, L, n_lblocks, BLOCK_R, BLOCK_L)  # at: the tile's elements
        b = _row_bias(B, r, l, R, L, C, PER_ROW).to(lo.dtype)
        if PER_ROW:  # position l of plane r
            h, w = (l // W)[None, :], (l % W)[None, :]
        else:  # channel l of position r
            h, w = ((r % (H * W)) // W)[:, None], (r % W)[:, None]
        acc = tl.zeros([BLOCK_R, BLOCK_L], dtype=lo.dtype)
        for i in tl.static_range(9):  # the 3x3 taps, (2 - dh^2)(2 - dw^2) / 16: 1, 2 or 4 sixteenths
            dh, dw = i // 3 - 1, i % 3 - 1
            ok = mask & (h + dh >= 0) & (h + dh < H) & (w + dw >= 0) & (w + dw < W)
            q = at + ((dh * W + dw) if PER_ROW else (dh * W + dw) * L)
            if BLUR_FIRST:
                t = tl.load(V + q, mask=ok, other=0.0).to(lo.dtype)
            else:
                u = tl.load(X + q, mask=ok, other=0.0).to(lo.dtype) * xs + b
                v = u if FORWARD else tl.load(V + q, mask=ok, other=0.0).to(lo.dtype)
                t = tl.where(ok, tl.where(u > 0, hi, lo) * v, 0.0)  # zero padding: nothing outside
            acc += t * ((2 - dh * dh) * (2 - dw * dw) / 16.0)
        if BLUR_FIRST:
            u = tl.load(X + at, mask=mask, other=0.0).to(lo.dtype) * xs + b
            acc = tl.where(u > 0, hi, lo) * acc
        tl.store(OUT + at, (acc * vs).to(OUT.dtype.element_ty), mask=mask)
        if SUM_BIAS:
            _store_row_sums(PDB, tl.where(mask, acc, 0.0), rb, lb, r, l, R, L, n_lblocks, PER_ROW)

    # ------------------------------------------------------------------------------------------
    # Triton kernel: the discriminator's 2x2 average + bias + leaky ReLU in one pass (the end of its
    # downsampling layer below FUSED_FROM: conv 3x3, average, bias, leaky ReLU), and its gradients
    #
    # With P the 2x2 average ([.., H, W] -> [.., H/2, W/2]), P^T its adjoint (a quarter of each value
    # to each of its four pixels), u = xs * P(x) + b and m = gain * (1 if u > 0 else slope): the
    # forward is y = m * u, its gradient dx = xs * P^T(m * dy) ("unpool", half size to full), and that
    # map's adjoint xs * m * P(v) ("pool", full size to half): each the other's adjoint, the mask's
    # derivative zero almost everywhere, so the gradients of any order are these two again. The
    # mask is read off the sign of the saved y. Tiles run over the half-size tensor: PER_ROW (NCHW)
    # rows are planes of H2 * W2 positions, else (channels_last) rows are positions of C channels.
    @triton.jit
    def _lrelu_pool_kernel(
        V, Y, B, OUT,  # V: x (FORWARD) or the values; Y: the forward's half-size output (its sign: the mask)
        M,             # [4] (gain * slope, gain, xs, vs) in the compute dtype: exact in fp64 as well
        PDB,           # UNPOOL with SUM_BIAS: partial sums of m * V, [R, n_lblocks] if PER_ROW else [n_rblocks, C]
        R, L, H2, W2, C, n_lblocks,
        MODE: tl.constexpr, SUM_BIAS: tl.constexpr, PER_ROW: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr,
    ):
        """MODE 0 (forward): OUT = m * (xs * P(V) + b). 1 (pool): OUT = vs * m * P(V). 2 (unpool):
        OUT = vs * P^T(m * V). V and OUT are full size where P reads or P^T writes them."""
        lo, hi, xs, vs = tl.load(M), tl.load(M + 1), tl.load(M + 2), tl.load(M + 3)
        rb, lb, r, l, mask, half = _row_tile(R, L, n_lblocks, BLOCK_R, BLOCK_L)  # the half-size elements
        if PER_ROW:  # position l of plane r; its 2x2 pixels in plane r of 4 * L
            h2, w2 = (l // W2)[None, :], (l % W2)[None, :]
            full = r.to(tl.int64)[:, None] * (4 * L) + (2 * h2) * (2 * W2) + 2 * w2
            step_w, step_h = 1, 2 * W2
        else:  # channel l of position r = (n, h2, w2); its pixels are whole rows of C
            n, p = (r // (H2 * W2)).to(tl.int64), r % (H2 * W2)
            h2, w2 = (p // W2)[:, None], (p % W2)[:, None]
            full = ((n[:, None] * (2 * H2) + 2 * h2) * (2 * W2) + 2 * w2) * C + l[None, :]
            step_w, step_h = C, 2 * W2 * C
        if MODE == 2:
            y = tl.load(Y + half, mask=mask, other=0.0).to(lo.dtype)
            t = tl.where(y > 0, hi, lo) * tl.load(V + half, mask=mask, other=0.0).to(lo.dtype)
            q = (t * vs * 0.25).to(OUT.dtype.element_ty)
            for i in tl.static_range(4):
                tl.store(OUT + full + (i // 2) * step_h + (i % 2) * step_w, q, mask=mask)
            if SUM_BIAS:
                _store_row_sums(PDB, tl.where(mask, t, 0.0), rb, lb, r, l, R, L, n_lblocks, PER_ROW)
        else:
            acc = tl.zeros([BLOCK_R, BLOCK_L], dtype=lo.dtype)
            for i in tl.static_range(4):
                acc += tl.load(V + full + (i // 2) * step_h + (i % 2) * step_w, mask=mask, other=0.0).to(lo.dtype)
            acc = acc * 0.25
            if MODE == 0:
                u = acc * xs + _row_bias(B, r, l, R, L, C, PER_ROW).to(lo.dtype)
                out = tl.where(u > 0, hi, lo) * u
            else:
                y = tl.load(Y + half, mask=mask, other=0.0).to(lo.dtype)
                out = tl.where(y > 0, hi, lo) * acc * vs
            tl.store(OUT + half, out.to(OUT.dtype.element_ty), mask=mask)

    # ------------------------------------------------------------------------------------------
    # Triton kernels: the minibatch stddev layer and its two derivatives
    #
    # With G = group, M = n_groups = N / G, K = cols = C / n_feat * HW: one program per (group m,
    # feature f) owns the G x K block x[g * M + m, f * K : (f + 1) * K] of x read as [N, C * HW]
    # (NCHW) and walks it in BLOCK_K columns; the output [N, C + n_feat, HW] holds x's rows followed
    # by the n_feat stat planes. With d = x - mean_g(x) and sd = sqrt(mean_g(d^2) + 1e-8) per column:
    #   forward   s = mean_k(sd), the stat planes filled with it
    #   backward  dx = dout[:, :C] + gs d / (G K sd), gs the sum of dout over the group's stat planes
    #   its adjoint, for h the gradient of dx (R1): d dout = h, and sum(h d / sd) / (G K) in the stat
    #             planes; d x = gs / (G K sd) (h - mean_g(h) - d mean_g(h d) / sd^2)

    @triton.jit
    def _wide(v, FP64: tl.constexpr):
        """v in the compute dtype: fp32, or fp64 for an fp64 model (exact tests)."""
        if FP64:
            w = v.to(tl.float64)
        else:
            w = v.to(tl.float32)
        return w

    @triton.jit
    def _mbstd_block(pid, n_groups, C, HW, group, n_feat, BLOCK_G: tl.constexpr):
        """This program's samples (int64), their mask, and the offsets of its block in a row of x and
        of the output, and of its stat plane in the output."""
        m, f = pid // n_feat, pid % n_feat
        g = tl.arange(0, BLOCK_G)
        n = (g * n_groups + m).to(tl.int64)
        k0 = f * (C // n_feat) * HW
        return g < group, n * (C * HW) + k0, n * ((C + n_feat) * HW) + k0, n * ((C + n_feat) * HW) + (C + f) * HW

    @triton.jit
    def _mbstd_columns(X, x_row, g_ok, k, cols, group, FP64: tl.constexpr):
        """Columns k of the block: their mask, x as stored, and in the compute dtype d and sd."""
        mask = g_ok[:, None] & (k < cols)[None, :]
        xv = tl.load(X + x_row[:, None] + k[None, :], mask=mask, other=0.0)
        v = _wide(xv, FP64)
        d = tl.where(mask, v - (tl.sum(v, axis=0) / group)[None, :], 0.0)
        return mask, xv, d, tl.sqrt(tl.sum(d * d, axis=0) / group + 1e-8)

    @triton.jit
    def _mbstd_stat_sum(GO, stat, g_ok, HW, FP64: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_HW: tl.constexpr):
        """gs: dout summed over the group's stat planes."""
        acc = _wide(tl.zeros([BLOCK_G, BLOCK_HW], dtype=tl.float32), FP64)
        for hw0 in range(0, HW, BLOCK_HW):
            hw = hw0 + tl.arange(0, BLOCK_HW)
            mask = g_ok[:, None] & (hw < HW)[None, :]
            acc += _wide(tl.load(GO + stat[:, None] + hw[None, :], mask=mask, other=0.0), FP64)
        return tl.sum(tl.sum(acc, axis=1), axis=0)

    @triton.jit
    def _mbstd_stat_fill(OUT, stat, g_ok, HW, value, BLOCK_G: tl.constexpr, BLOCK_HW: tl.constexpr):
        fill = (tl.zeros([BLOCK_G, BLOCK_HW], dtype=value.dtype) + value).to(OUT.dtype.element_ty)
        for hw0 in range(0, HW, BLOCK_HW):
            hw = hw0 + tl.arange(0, BLOCK_HW)
            tl.store(OUT + stat[:, None] + hw[None, :], fill, mask=g_ok[:, None] & (hw < HW)[None, :])

    @triton.jit
    def _mbstd_fwd_kernel(
        X, OUT,  # [N, C, HW] in, [N, C + n_feat, HW] out (x's dtype), NCHW-contiguous
        n_groups, C, HW, group, n_feat, cols,
        FP64: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        g_ok, x_row, o_row, stat = _mbstd_block(tl.program_id(0), n_groups, C, HW, group, n_feat, BLOCK_G)
        total = _wide(tl.zeros([BLOCK_K], dtype=tl.float32), FP64)
        for k0 in range(0, cols, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            mask, xv, d, sd = _mbstd_columns(X, x_row, g_ok, k, cols, group, FP64)
            tl.store(OUT + o_row[:, None] + k[None, :], xv, mask=mask)
            total += tl.where(k < cols, sd, 0.0)
        _mbstd_stat_fill(OUT, stat, g_ok, HW, tl.sum(total, axis=0) / cols, BLOCK_G, BLOCK_HW)

    @triton.jit
    def _mbstd_bwd_kernel(
        GO, X, DX,  # [N, C + n_feat, HW] dout, [N, C, HW] x, [N, C, HW] dx out (x's dtype), NCHW
        n_groups, C, HW, group, n_feat, cols,
        FP64: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        g_ok, x_row, o_row, stat = _mbstd_block(tl.program_id(0), n_groups, C, HW, group, n_feat, BLOCK_G)
        coef = _mbstd_stat_sum(GO, stat, g_ok, HW, FP64, BLOCK_G, BLOCK_HW) / (group * cols)
        for k0 in range(0, cols, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            mask, _, d, sd = _mbstd_columns(X, x_row, g_ok, k, cols, group, FP64)
            go = _wide(tl.load(GO + o_row[:, None] + k[None, :], mask=mask, other=0.0), FP64)
            dx = go + coef * d / sd[None, :]
            tl.store(DX + x_row[:, None] + k[None, :], dx.to(DX.dtype.element_ty), mask=mask)

    @triton.jit
    def _mbstd_bwd_adjoint_kernel(
        GDX, GO, X,  # [N, C, HW] h (the gradient of dx), [N, C + n_feat, HW] dout, [N, C, HW] x; NCHW
        GGO, GX,     # out: [N, C + n_feat, HW] the gradient of dout (dout's dtype), [N, C, HW] of x (x's)
        n_groups, C, HW, group, n_feat, cols,
        FP64: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        g_ok, x_row, o_row, stat = _mbstd_block(tl.program_id(0), n_groups, C, HW, group, n_feat, BLOCK_G)
        coef = _mbstd_stat_sum(GO, stat, g_ok, HW, FP64, BLOCK_G, BLOCK_HW) / (group * cols)
        total = _wide(tl.zeros([BLOCK_K], dtype=tl.float32), FP64)
        for k0 in range(0, cols, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            mask, _, d, sd = _mbstd_columns(X, x_row, g_ok, k, cols, group, FP64)
            h = _wide(tl.load(GDX + x_row[:, None] + k[None, :], mask=mask, other=0.0), FP64)
            tl.store(GGO + o_row[:, None] + k[None, :], h.to(GGO.dtype.element_ty), mask=mask)
            hd = tl.sum(h * d, axis=0)  # [BLOCK_K]
            gx = h - (tl.sum(h, axis=0) / group)[None, :] - d * (hd / (group * sd * sd))[None, :]
            gx = gx * (coef / sd)[None, :]
            tl.store(GX + x_row[:, None] + k[None, :], gx.to(GX.dtype.element_ty), mask=mask)
            total += tl.where(k < cols, hd / sd, 0.0)
        _mbstd_stat_fill(GGO, stat, g_ok, HW, tl.sum(total, axis=0) / (group * cols), BLOCK_G, BLOCK_HW)


# ----------------------------------------------------------------------------------------------
# Launchers (shapes, layouts, tile plans)

def _num_warps(tile):
    return max(1, min(8, tile // 512))


def _dense(x):
    """x itself if NCHW- or channels_last-contiguous (so empty_like(x) has x's strides), else a copy."""
    if x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def _in_layout(t, like):
    """t with like's strides (its values; a copy only where the layouts differ), for kernels that walk
    several same-shaped tensors with one set of offsets."""
    return t if t.stride() == like.stride() else torch.empty_like(like, dtype=t.dtype).copy_(t)


def _plane_strides(t):
    """(sn, sc, shw): strides of a [N, C, H, W] tensor over n, c and the flattened h * w, copying t
    first if its H and W do not flatten into one axis. Returns (t, strides)."""
    sn, sc, sh, sw = t.stride()
    H, W = t.shape[2:]
    if H > 1 and W > 1 and sh != W * sw:
        t = t.contiguous()
        sn, sc, sh, sw = t.stride()
    return t, (sn, sc, sw if W > 1 else sh)


def _adain_plan(C, HW, channels_last):
    """(BLOCK_C, BLOCK_HW, n_chunks) of a noise_adain launch."""
    if SPLIT_HW < 1 or SPLIT_HW & (SPLIT_HW - 1):
        raise ValueError(f"kernels.SPLIT_HW must be a power of two, got {SPLIT_HW}")
    c_p2, hw_p2 = triton.next_power_of_2(C), triton.next_power_of_2(HW)
    # In channels_last a plane is strided by C: take channels side by side so loads coalesce.
    min_c = min(c_p2, 32) if channels_last else 1
    if hw_p2 * min_c <= SPLIT_HW:  # whole planes, several per program while they are small
        return min(c_p2, max(min_c, BATCH_TILE // hw_p2)), hw_p2, 1
    block_hw = max(1, SPLIT_HW // min_c)
    return min_c, block_hw, triton.cdiv(HW, block_hw)


def _adain_launch_args(x, noise, noise_weight, bias, slope, blur, xs):
    """Layout-normalized x, the grid, and the keyword arguments (named as in the kernels' signatures)
    that every adain kernel shares: inputs, plane geometry, strides, tile plan."""
    N, C, H, W = x.shape
    x, (x_sn, x_sc, x_shw) = _plane_strides(_dense(x))
    has_noise = noise is not None
    if has_noise:
        noise, (nz_sn, _, nz_shw) = _plane_strides(noise)
        noise_weight = noise_weight.contiguous()
    else:  # placeholders, never read (HAS_NOISE=False)
        noise, noise_weight, nz_sn, nz_shw = x, x, 0, 0
    BLOCK_C, BLOCK_HW, n_chunks = _adain_plan(C, H * W, channels_last=(x_sc == 1 and x_shw != 1))
    n_cblocks = triton.cdiv(C, BLOCK_C)
    shared = dict(X=x, NOISE=noise, NW=noise_weight, B=bias.contiguous(),
                  C=C, HW=H * W, W=W, n_cblocks=n_cblocks, n_chunks=n_chunks,
                  x_sn=x_sn, x_sc=x_sc, x_shw=x_shw, nz_sn=nz_sn, nz_shw=nz_shw, slope=slope, xs=xs,
                  HAS_NOISE=has_noise, BLUR=blur, BLOCK_C=BLOCK_C, BLOCK_HW=BLOCK_HW,
                  num_warps=_num_warps(BLOCK_C * BLOCK_HW))
    return x, (N * n_cblocks * n_chunks,), shared


def _partials_plan(R, n_chunks):
    """Grid and tile (BLOCK_R rows of BLOCK_K chunks, about 1024 elements) of the small kernels that
    reduce [.., R, n_chunks] partials."""
    BLOCK_K = min(triton.next_power_of_2(n_chunks), 256)
    BLOCK_R = min(triton.next_power_of_2(R), max(1, 1024 // BLOCK_K))
    tile = dict(BLOCK_R=BLOCK_R, BLOCK_K=BLOCK_K, num_warps=_num_warps(BLOCK_R * BLOCK_K))
    return (triton.cdiv(R, BLOCK_R),), tile


def _sum_partials(p, q, N, R, n_chunks):
    """p [N, R, n_chunks] (fp32, or fp64) summed over n and chunks to [R] in p's dtype, and q likewise
    (None: none). With one partial per row (N = n_chunks = 1) they are the sums: no launch."""
    has_q = q is not None
    if N * n_chunks == 1:
        return p.view(R), (q.view(R) if has_q else None)
    p_sum = torch.empty(R, device=p.device, dtype=p.dtype)
    q_sum = torch.empty(R, device=p.device, dtype=p.dtype) if has_q else None
    grid, tile = _partials_plan(R, n_chunks)
    _sum_partials_kernel[grid](P=p, Q=q if has_q else p, P_SUM=p_sum, Q_SUM=q_sum if has_q else p_sum,
                               N=N, R=R, n_chunks=n_chunks, HAS_Q=has_q, **tile)  # p: placeholder
    return p_sum, q_sum


def _adain_forward(x, noise, noise_weight, bias, scale, shift, slope, eps, blur=False, xs=1.0):
    """Returns y [N, C, H, W] (x's dtype) and the fp32 plane statistics mean, rstd [N, C]."""
    N, C, H, W = x.shape
    x, grid, shared = _adain_launch_args(x, noise, noise_weight, bias, slope, blur, xs)
    n_chunks = shared["n_chunks"]
    y = torch.empty_like(x)
    mean = torch.empty((N, C), device=x.device, dtype=torch.float32)
    rstd = torch.empty((N, C), device=x.device, dtype=torch.float32)
    if n_chunks > 1:  # split planes: per-chunk statistics, then one small launch combines them
        cmean = torch.empty((N * C, n_chunks), device=x.device, dtype=torch.float32)
        cm2 = torch.empty((N * C, n_chunks), device=x.device, dtype=torch.float32)
        _adain_stats_kernel[grid](CMEAN=cmean, CM2=cm2, **shared)
        sgrid, tile = _partials_plan(N * C, n_chunks)
        _adain_combine_stats_kernel[sgrid](CMEAN=cmean, CM2=cm2, MEAN=mean, RSTD=rstd, R=N * C, HW=H * W,
                                           n_chunks=n_chunks, chunk_hw=shared["BLOCK_HW"], eps=eps, **tile)
    _adain_fwd_kernel[grid](Y=y, SCALE=scale.contiguous(), SHIFT=shift.contiguous(), MEAN=mean, RSTD=rstd,
                            eps=eps, HAS_STATS=n_chunks > 1, **shared)
    return y, mean, rstd


def _adain_backward(dy, x, noise, noise_weight, bias, scale, mean, rstd, slope, blur=False, xs=1.0):
    """Returns xs * du [N, C, H, W] (x's dtype; dx itself without blur, blur2d of it with it), d
    noise_weight [C], d bias [C], d scale, d shift [N, C], all but dx in fp32; d noise_weight is None
    without noise."""
    N, C, H, W = x.shape
    x, grid, shared = _adain_launch_args(x, noise, noise_weight, bias, slope, blur, xs)
    dy, (g_sn, g_sc, g_shw) = _plane_strides(dy)  # dy may come in any layout (e.g. expanded by .sum())
    grad = dict(G=dy, g_sn=g_sn, g_sc=g_sc, g_shw=g_shw, MEAN=mean, RSTD=rstd)
    n_chunks, has_noise = shared["n_chunks"], shared["HAS_NOISE"]
    dx = torch.empty_like(x)
    pdb = torch.empty((N * C, n_chunks), device=x.device, dtype=torch.float32)
    pdw = torch.empty((N * C, n_chunks), device=x.device, dtype=torch.float32) if has_noise else pdb
    if n_chunks > 1:  # split planes: dh and ds from per-chunk partial sums, before the pass over dx
        pdh = torch.empty((N * C, n_chunks), device=x.device, dtype=torch.float32)
        pds = torch.empty((N * C, n_chunks), device=x.device, dtype=torch.float32)
        _adain_bwd_sums_kernel[grid](PDSHIFT=pdh, PDSCALE=pds, **grad, **shared)
        dshift, dscale = (t.view(N, C) for t in _sum_partials(pdh, pds, 1, N * C, n_chunks))
    else:  # written by _adain_bwd_kernel
        dshift = torch.empty((N, C), device=x.device, dtype=torch.float32)
        dscale = torch.empty((N, C), device=x.device, dtype=torch.float32)
    _adain_bwd_kernel[grid](DX=dx, SCALE=scale.contiguous(), DSHIFT=dshift, DSCALE=dscale, PDB=pdb, PDW=pdw,
                            HAS_SUMS=n_chunks > 1, **grad, **shared)
    dbias, dnw = _sum_partials(pdb, pdw if has_noise else None, N, C, n_chunks)
    return dx, dnw, dbias, dscale, dshift


def _rows_plan(x):
    """A dense x as rows [R, L] in memory order and the tiles over them: (R, L, per_row, BLOCK_R,
    BLOCK_L, n_lblocks, grid). per_row: NCHW, a row is one channel's plane; else ([N, C] or
    channels_last) a row is one position's channels."""
    C = x.shape[1]
    if x.ndim == 2 or not x.is_contiguous():  # [N, C] or channels_last: channel is the last axis
        R, L, per_row = x.numel() // C, C, False
    else:  # NCHW: one channel per row of H * W
        R, L, per_row = x.shape[0] * C, x.numel() // (x.shape[0] * C), True
    BLOCK_R, BLOCK_L, n_rblocks, n_lblocks = _tile_plan(R, L)
    return R, L, per_row, BLOCK_R, BLOCK_L, n_lblocks, (n_rblocks * n_lblocks,)


def _tile_plan(R, L):
    """(BLOCK_R, BLOCK_L, n_rblocks, n_lblocks) of a row kernel over [R, L]: tiles of about
    ELEMWISE_TILE elements, whole rows where they fit."""
    BLOCK_L = min(triton.next_power_of_2(L), ELEMWISE_TILE)
    BLOCK_R = min(triton.next_power_of_2(R), max(1, ELEMWISE_TILE // BLOCK_L))
    return BLOCK_R, BLOCK_L, triton.cdiv(R, BLOCK_R), triton.cdiv(L, BLOCK_L)


def _row_partials(per_row, R, C, n_rblocks, n_lblocks, device, dtype):
    """The buffer a row kernel writes its per-channel partial sums into (_store_row_sums)."""
    return torch.empty((R, n_lblocks) if per_row else (n_rblocks, C), device=device, dtype=dtype)


def _sum_row_partials(pdb, per_row, N, C, n_rblocks, n_lblocks):
    """The per-channel sums [C] of a row kernel's partials: pdb read as [n, C, n_chunks]."""
    n, n_chunks = (N, n_lblocks) if per_row else (n_rblocks, 1)
    return _sum_partials(pdb, None, n, C, n_chunks)[0]


def _bias_lrelu_forward(x, bias, slope, gain, xs=1.0):
    x = _dense(x)
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    R, L, per_row, BLOCK_R, BLOCK_L, n_lblocks, grid = _rows_plan(x)
    _bias_lrelu_fwd_kernel[grid](X=x, Y=y, B=bias.contiguous(), R=R, L=L, C=x.shape[1], n_lblocks=n_lblocks,
                                 slope=slope, gain=gain, xs=xs, BIAS_PER_ROW=per_row, BLOCK_R=BLOCK_R,
                                 BLOCK_L=BLOCK_L, num_warps=_num_warps(BLOCK_R * BLOCK_L))
    return y


def _lrelu_grad(g, y, slope, gain, xs=1.0, sum_bias=False):
    """dx [like y] and, with sum_bias, the bias gradient [C] in fp32 (fp64 for fp64 y; else None)."""
    dx = torch.empty_like(y)  # y is dense, so dx has its strides
    C, acc = y.shape[1], torch.promote_types(y.dtype, torch.float32)
    g = _in_layout(g, y)  # one layout for all three tensors
    if y.numel() == 0:
        return dx, (torch.zeros(C, device=y.device, dtype=acc) if sum_bias else None)
    R, L, per_row, BLOCK_R, BLOCK_L, n_lblocks, grid = _rows_plan(y)
    n_rblocks = triton.cdiv(R, BLOCK_R)
    pdb = _row_partials(per_row, R, C, n_rblocks, n_lblocks, y.device, acc) if sum_bias \
        else dx  # placeholder, never written without SUM_BIAS
    _lrelu_grad_kernel[grid](G=g, Y=y, DX=dx, PDB=pdb, R=R, L=L, n_lblocks=n_lblocks, slope=slope, gain=gain,
                             xs=xs, SUM_BIAS=sum_bias, BIAS_PER_ROW=per_row, BLOCK_R=BLOCK_R, BLOCK_L=BLOCK_L,
                             num_warps=_num_warps(BLOCK_R * BLOCK_L))
    if not sum_bias:
        return dx, None
    return dx, _sum_row_partials(pdb, per_row, y.shape[0], C, n_rblocks, n_lblocks)


@functools.lru_cache(maxsize=None)
def _mask_values(slope, gain, xs, vs, device, dtype):  # cached: no copy to the device per call (nor in a graph)
    return torch.tensor([gain * slope, gain, xs, vs], dtype=dtype).to(device)


def _lrelu_blur(x, bias, v, slope, gain, blur_first, xs=1.0, vs=1.0, sum_bias=False):
    """_lrelu_blur_kernel over x [N, C, H, W], NCHW- or channels_last-contiguous, with u = xs * x + b:
    B(m * u) when v is None (the forward), vs * m * B(v) when blur_first, else vs * B(m * v) (v taken
    into x's layout); and with sum_bias the per-channel sums of the result over vs (the bias gradient;
    fp32, or fp64 for fp64) or None."""
    forward = v is None
    v = x if forward else _in_layout(v, x)
    out, acc = torch.empty_like(v), torch.promote_types(v.dtype, torch.float32)
    N, C, H, W = x.shape
    R, L, per_row, BLOCK_R, BLOCK_L, n_lblocks, grid = _rows_plan(x)
    n_rblocks = triton.cdiv(R, BLOCK_R)
    pdb = _row_partials(per_row, R, C, n_rblocks, n_lblocks, x.device, acc) if sum_bias \
        else out  # else a placeholder, never written
    _lrelu_blur_kernel[grid](
        X=x, B=bias, V=v, OUT=out, M=_mask_values(slope, gain, xs, vs, x.device, acc), PDB=pdb, R=R, L=L, H=H, W=W,
        C=C, n_lblocks=n_lblocks, BLUR_FIRST=blur_first, FORWARD=forward, SUM_BIAS=sum_bias, PER_ROW=per_row,
        BLOCK_R=BLOCK_R, BLOCK_L=BLOCK_L, num_warps=_num_warps(BLOCK_R * BLOCK_L))
    if not sum_bias:
        return out, None
    return out, _sum_row_partials(pdb, per_row, N, C, n_rblocks, n_lblocks)


def _lrelu_pool(v, y, bias, slope, gain, mode, xs=1.0, vs=1.0, sum_bias=False, per_row=True):
    """_lrelu_pool_kernel. mode 0: v is x [N, C, H, W] (even H and W), returns y = m * (xs * P(x) + b)
    [N, C, H/2, W/2]; 1: v full size, returns vs * m * P(v); 2: v half size, returns vs * P^T(m * v)
    and, with sum_bias, the per-channel sums of m * v (fp32, or fp64 for fp64) or None. NCHW or
    channels_last, as x; the gradients take per_row, x's layout (NCHW), as the forward found it (a
    1x1 y is both), and v into it."""
    if mode == 0:
        per_row = v.is_contiguous()
        N, C, H, W = v.shape
    else:
        N, C, H, W = y.shape[0], y.shape[1], 2 * y.shape[2], 2 * y.shape[3]
    layout = torch.contiguous_format if per_row else torch.channels_last
    if mode:
        v = v.contiguous(memory_format=layout) if mode == 1 else _in_layout(v, y)
    H2, W2 = H // 2, W // 2
    out_shape = (N, C, H, W) if mode == 2 else (N, C, H2, W2)
    out = torch.empty(out_shape, device=v.device, dtype=v.dtype, memory_format=layout)
    acc = torch.promote_types(v.dtype, torch.float32)
    R, L = (N * C, H2 * W2) if per_row else (N * H2 * W2, C)
    BLOCK_R, BLOCK_L, n_rblocks, n_lblocks = _tile_plan(R, L)
    pdb = _row_partials(per_row, R, C, n_rblocks, n_lblocks, v.device, acc) if sum_bias \
        else out  # else a placeholder, never written
    _lrelu_pool_kernel[(n_rblocks * n_lblocks,)](
        V=v, Y=v if y is None else y, B=v if bias is None else bias, OUT=out,
        M=_mask_values(slope, gain, xs, vs, v.device, acc), PDB=pdb, R=R, L=L, H2=H2, W2=W2, C=C,
        n_lblocks=n_lblocks, MODE=mode, SUM_BIAS=sum_bias, PER_ROW=per_row, BLOCK_R=BLOCK_R, BLOCK_L=BLOCK_L,
        num_warps=_num_warps(BLOCK_R * BLOCK_L))
    if not sum_bias:
        return out, None
    return out, _sum_row_partials(pdb, per_row, N, C, n_rblocks, n_lblocks)


def _mbstd_launch(kernel, x, group_size, num_features, **tensors):
    """One program per (group, feature) over NCHW-contiguous tensors (kernels' comment above)."""
    N, C, H, W = x.shape
    K = C // num_features * H * W
    BLOCK_G = triton.next_power_of_2(group_size)
    BLOCK_K = max(1, min(triton.next_power_of_2(K), 4096 // BLOCK_G))
    kernel[(N // group_size * num_features,)](
        **tensors, X=x, n_groups=N // group_size, C=C, HW=H * W, group=group_size, n_feat=num_features, cols=K,
        FP64=x.dtype == torch.float64, BLOCK_G=BLOCK_G, BLOCK_K=BLOCK_K,
        BLOCK_HW=min(triton.next_power_of_2(H * W), BLOCK_K), num_warps=_num_warps(BLOCK_G * BLOCK_K))


# ----------------------------------------------------------------------------------------------
# Autograd functions

class _NoiseAdaIN(torch.autograd.Function):
    """noise_adain; with blur, of blur2d_ref(x): the blur is read in the kernels (x's 3x3
    neighbourhoods), so the blurred x is never written, and its gradient is blur2d_ref of the
    gradient the kernels compute for the blurred x (the blur is its own adjoint)."""

    @staticmethod
    def forward(ctx, x, noise, noise_weight, bias, scale, shift, slope, eps, blur, xs):
        y, mean, rstd = _adain_forward(x, noise, noise_weight, bias, scale, shift, slope, eps, blur, xs)
        ctx.save_for_backward(x, noise, noise_weight, bias, scale, mean, rstd)
        ctx.slope, ctx.shift_dtype, ctx.blur, ctx.xs = slope, shift.dtype, blur, xs
        return y

    @staticmethod
    @once_differentiable  # StyleGAN (v1) never differentiates the generator twice
    def backward(ctx, dy):
        x, noise, noise_weight, bias, scale, mean, rstd = ctx.saved_tensors
        du, dnw, dbias, dscale, dshift = _adain_backward(dy, x, noise, noise_weight, bias, scale,
                                                         mean, rstd, ctx.slope, ctx.blur, ctx.xs)
        dnoise = None
        if ctx.needs_input_grad[1]:  # rare (noise is sampled); one extra read of du (xs * du)
            dnoise = (du.float() * (noise_weight.float() / ctx.xs).view(1, -1, 1, 1)).sum(1, keepdim=True)
            dnoise = dnoise.to(noise.dtype)
        if dnw is not None:
            dnw = dnw.to(noise_weight.dtype)
        dx = blur2d_ref(du) if ctx.blur else du
        return (dx, dnoise, dnw, dbias.to(bias.dtype), dscale.to(scale.dtype),
                dshift.to(ctx.shift_dtype), None, None, None, None)


def _plus_channel(g, per_channel, xs):
    """g + per_channel[c] / xs, in g's dtype and layout (g first): the adjoints of the kernels that
    return a gradient times xs beside its per-channel sums."""
    return torch.add(g, per_channel.to(g.dtype).view(1, -1, *([1] * (g.ndim - 2))), alpha=1 / xs)


def _needs_grad(ctx, i):
    """Whether this backward call must return the gradient of input i (a tensor argument; they come
    first). ctx.needs_input_grad says whether the input requires grad at all; but autograd.grad(...,
    inputs=x), as in R1's first-order pass, wants only some, and the engine says which nodes it will
    run (C++ nodes such as torch's convolution backward ask it the same way)."""
    if not ctx.needs_input_grad[i]:
        return False
    try:
        return torch._C._will_engine_execute_node(ctx.next_functions[i][0])
    except (AttributeError, RuntimeError):  # an older torch, or a leaf named in autograd.grad's inputs
        return True


class _LReLUGrad(torch.autograd.Function):
    """dx = g * xs * gain * (1 if y > 0 else slope), the backward of bias_lrelu as an op of its own."""

    @staticmethod
    def forward(ctx, g, y, slope, gain, xs):
        ctx.save_for_backward(y)
        ctx.slope, ctx.gain, ctx.xs = slope, gain, xs
        return _lrelu_grad(g, y, slope, gain, xs)[0]

    @staticmethod
    def backward(ctx, ggx):
        y, = ctx.saved_tensors
        gg = _LReLUGrad.apply(ggx, y, ctx.slope, ctx.gain, ctx.xs) if ctx.needs_input_grad[0] else None
        return gg, None, None, None, None  # the mask is piecewise constant in y: zero gradient


class _LReLUGradBias(torch.autograd.Function):
    """(dx, db) = (xs * m * g, sum over all but the channel axis of m * g), m = gain * (1 if y > 0
    else slope), in one pass over g. Linear in g: its adjoint takes (ggx, ggb) to
    m * (xs * ggx + ggb[c]) = xs * m * (ggx + ggb[c] / xs), _LReLUGrad of that sum (ggx first, so it
    keeps ggx's layout), so it is differentiable again."""

    @staticmethod
    def forward(ctx, g, y, slope, gain, xs):
        ctx.save_for_backward(y)
        ctx.slope, ctx.gain, ctx.xs = slope, gain, xs
        return _lrelu_grad(g, y, slope, gain, xs, sum_bias=True)

    @staticmethod
    def backward(ctx, ggx, ggb):
        y, = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        gg = _LReLUGrad.apply(_plus_channel(ggx, ggb, ctx.xs), y, ctx.slope, ctx.gain, ctx.xs)
        return gg, None, None, None, None


class _BiasLReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, slope, gain, xs):
        y = _bias_lrelu_forward(x, bias, slope, gain, xs)
        ctx.save_for_backward(y)
        ctx.slope, ctx.gain, ctx.xs, ctx.bias_dtype = slope, gain, xs, bias.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        y, = ctx.saved_tensors
        if not _needs_grad(ctx, 1):  # no bias gradient wanted (R1's first-order pass): none summed
            return _LReLUGrad.apply(dy, y, ctx.slope, ctx.gain, ctx.xs), None, None, None, None
        dx, dbias = _LReLUGradBias.apply(dy, y, ctx.slope, ctx.gain, ctx.xs)
        return dx, dbias.to(ctx.bias_dtype), None, None, None


class _Blur2d(torch.autograd.Function):
    """blur2d without a weight gradient. The blur is linear, y = K * x (correlation with zero
    padding 1), and its adjoint is the correlation with the flipped filter under the same padding;
    K = [1,2,1]^T [1,2,1] / 16 is symmetric, so dL/dx = K * dL/dy = blur2d(dL/dy). That backward is
    again this Function: R1's double backward sees only blurs."""

    @staticmethod
    def forward(ctx, x):
        return blur2d_ref(x)

    @staticmethod
    def backward(ctx, dy):
        return _Blur2d.apply(dy)


class _BiasLReLUBlur(torch.autograd.Function):
    """y = B(m * (xs * x + b)) (kernels.bias_lrelu_blur); dx = xs * m * B(dy), db = the sum of m * B(dy)
    over all but the channel axis (skipped when no bias gradient is wanted, as in R1's first-order
    pass)."""

    @staticmethod
    def forward(ctx, x, bias, slope, gain, xs):
        ctx.save_for_backward(x, bias)
        ctx.slope, ctx.gain, ctx.xs, ctx.bias_dtype = slope, gain, xs, bias.dtype
        return _lrelu_blur(x, bias, None, slope, gain, False, xs)[0]

    @staticmethod
    def backward(ctx, dy):
        x, bias = ctx.saved_tensors
        if not _needs_grad(ctx, 1):
            return _MaskedBlur.apply(dy, x, bias, ctx.slope, ctx.gain, ctx.xs, ctx.xs, True), None, None, None, None
        dx, dbias = _MaskBlurBias.apply(dy, x, bias, ctx.slope, ctx.gain, ctx.xs)
        return dx, dbias.to(ctx.bias_dtype), None, None, None


class _MaskedBlur(torch.autograd.Function):
    """v -> vs * m * B(v) (blur_first) or vs * B(m * v), m from u = xs * x + b. Both are linear in v
    and each is the other's adjoint (B is symmetric, m diagonal); the mask is piecewise constant in
    x and b. So the gradient of either is the other, to any order, and none flows to x or b."""

    @staticmethod
    def forward(ctx, v, x, bias, slope, gain, xs, vs, blur_first):
        ctx.save_for_backward(x, bias)
        ctx.slope, ctx.gain, ctx.xs, ctx.vs, ctx.blur_first = slope, gain, xs, vs, blur_first
        return _lrelu_blur(x, bias, v, slope, gain, blur_first, xs, vs)[0]

    @staticmethod
    def backward(ctx, gout):
        x, bias = ctx.saved_tensors
        out = None
        if ctx.needs_input_grad[0]:
            out = _MaskedBlur.apply(gout, x, bias, ctx.slope, ctx.gain, ctx.xs, ctx.vs, not ctx.blur_first)
        return out, None, None, None, None, None, None, None


class _MaskBlurBias(torch.autograd.Function):
    """g -> (xs * m * B(g), the per-channel sums of m * B(g)) in one pass; adjoint (ggx, ggb) ->
    B(m * (xs * ggx + ggb[c])) = xs * B(m * (ggx + ggb[c] / xs))."""

    @staticmethod
    def forward(ctx, g, x, bias, slope, gain, xs):
        ctx.save_for_backward(x, bias)
        ctx.slope, ctx.gain, ctx.xs = slope, gain, xs
        return _lrelu_blur(x, bias, g, slope, gain, True, xs, xs, sum_bias=True)

    @staticmethod
    def backward(ctx, ggx, ggb):
        x, bias = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        gx = _MaskedBlur.apply(_plus_channel(ggx, ggb, ctx.xs), x, bias, ctx.slope, ctx.gain, ctx.xs, ctx.xs, False)
        return gx, None, None, None, None, None


class _BiasLReLUPool(torch.autograd.Function):
    """y = m * (xs * P(x) + b) (kernels.bias_lrelu_pool); dx = xs * P^T(m * dy), db = the sum of
    m * dy over all but the channel axis (skipped when no bias gradient is wanted, as in R1's
    first-order pass). The mask lives in the sign of y, which the backward keeps."""

    @staticmethod
    def forward(ctx, x, bias, slope, gain, xs):
        y = _lrelu_pool(x, None, bias, slope, gain, 0, xs)[0]
        ctx.save_for_backward(y)
        ctx.slope, ctx.gain, ctx.xs, ctx.bias_dtype, ctx.nchw = slope, gain, xs, bias.dtype, x.is_contiguous()
        return y

    @staticmethod
    def backward(ctx, dy):
        y, = ctx.saved_tensors
        if not _needs_grad(ctx, 1):
            return _MaskedPool.apply(dy, y, ctx.slope, ctx.gain, ctx.xs, False, ctx.nchw), None, None, None, None
        dx, dbias = _UnpoolMaskBias.apply(dy, y, ctx.slope, ctx.gain, ctx.xs, ctx.nchw)
        return dx, dbias.to(ctx.bias_dtype), None, None, None


class _MaskedPool(torch.autograd.Function):
    """v -> vs * m * P(v) (pool: full size to half) or vs * P^T(m * v) (unpool: half to full), each
    the other's adjoint; so the gradient of either is the other, to any order, and none flows to y."""

    @staticmethod
    def forward(ctx, v, y, slope, gain, vs, pool, nchw):
        ctx.save_for_backward(y)
        ctx.slope, ctx.gain, ctx.vs, ctx.pool, ctx.nchw = slope, gain, vs, pool, nchw
        return _lrelu_pool(v, y, None, slope, gain, 1 if pool else 2, vs=vs, per_row=nchw)[0]

    @staticmethod
    def backward(ctx, gout):
        y, = ctx.saved_tensors
        out = None
        if ctx.needs_input_grad[0]:
            out = _MaskedPool.apply(gout, y, ctx.slope, ctx.gain, ctx.vs, not ctx.pool, ctx.nchw)
        return out, None, None, None, None, None, None


class _UnpoolMaskBias(torch.autograd.Function):
    """g -> (xs * P^T(m * g), the per-channel sums of m * g) in one pass; adjoint (ggx, ggb) ->
    m * (xs * P(ggx) + ggb[c]) = xs * m * P(ggx + ggb[c] / xs) (P of a constant is that constant)."""

    @staticmethod
    def forward(ctx, g, y, slope, gain, xs, nchw):
        ctx.save_for_backward(y)
        ctx.slope, ctx.gain, ctx.xs, ctx.nchw = slope, gain, xs, nchw
        return _lrelu_pool(g, y, None, slope, gain, 2, vs=xs, sum_bias=True, per_row=nchw)

    @staticmethod
    def backward(ctx, ggx, ggb):
        y, = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        gx = _MaskedPool.apply(_plus_channel(ggx, ggb, ctx.xs), y, ctx.slope, ctx.gain, ctx.xs, True, ctx.nchw)
        return gx, None, None, None, None, None


class _MinibatchStddev(torch.autograd.Function):
    """minibatch_stddev_ref in one launch; its backward is _MinibatchStddevGrad, one launch, whose
    adjoint is one more (R1 differentiates D twice)."""

    @staticmethod
    def forward(ctx, x, group_size, num_features):  # x NCHW-contiguous
        N, C, H, W = x.shape
        out = torch.empty((N, C + num_features, H, W), device=x.device, dtype=x.dtype)
        _mbstd_launch(_mbstd_fwd_kernel, x, group_size, num_features, OUT=out)
        ctx.save_for_backward(x)
        ctx.group_size, ctx.num_features = group_size, num_features
        return out

    @staticmethod
    def backward(ctx, dout):
        x, = ctx.saved_tensors
        return _MinibatchStddevGrad.apply(dout, x, ctx.group_size, ctx.num_features), None, None


class _MinibatchStddevGrad(torch.autograd.Function):
    """dx of the minibatch stddev layer from (dout, x); linear in dout, and its adjoint (the
    gradients of dout and x) is one kernel (_mbstd_bwd_adjoint_kernel). No third order (R1 needs
    two): once_differentiable makes .backward() through it raise, though autograd.grad(..., inputs=)
    can skip that check and return zeros."""

    @staticmethod
    def forward(ctx, dout, x, group_size, num_features):
        dout = dout.contiguous()
        dx = torch.empty_like(x)
        _mbstd_launch(_mbstd_bwd_kernel, x, group_size, num_features, GO=dout, DX=dx)
        ctx.save_for_backward(dout, x)
        ctx.group_size, ctx.num_features = group_size, num_features
        return dx

    @staticmethod
    @once_differentiable
    def backward(ctx, h):
        dout, x = ctx.saved_tensors
        ggo, gx = torch.empty_like(dout), torch.empty_like(x)
        _mbstd_launch(_mbstd_bwd_adjoint_kernel, x, ctx.group_size, ctx.num_features, GDX=h.contiguous(), GO=dout,
                      GGO=ggo, GX=gx)
        return ggo, gx, None, None


# Convolutions. For y = conv(x, w) (stride s, padding p; or the transposed convolution), with
# dy = dL/dy:
#   dx = conv^T(dy, w)   the adjoint: the transposed convolution with the same filter, s and p
#                        (a plain convolution is the adjoint of a transposed one)
#   dw = W(dy, x)        aten.convolution_backward asked for the weight gradient only
# W is bilinear and defined by <W(dy, x), v> = <dy, conv(x, v)> for every filter v, so for the
# gradient ggw of a loss of dw (R1's second order):
#   d/d(dy) <ggw, W(dy, x)> = conv(x, ggw)        the forward convolution with ggw as the filter
#   d/dx    <ggw, W(dy, x)> = conv^T(dy, ggw)     its adjoint, as dx above
# Every term is a convolution or W again, so _Conv2d and _Conv2dWeightGrad differentiate each other
# to any order and autograd never runs its own convolution double backward.

def _adjoint(conf, x_shape, y_shape, w_shape):
    """conf (stride, padding, transposed, output_padding) of the convolution that maps dL/dy to
    dL/dx. A strided convolution maps several input sizes to one output size; output_padding tells
    the transposed one which of them x has."""
    stride, padding, transposed, _ = conf
    if transposed:
        return stride, padding, False, (0, 0)
    out_pad = tuple(x_shape[d] - ((y_shape[d] - 1) * stride - 2 * padding + w_shape[d]) for d in (2, 3))
    return stride, padding, True, out_pad


def _convolution(x, w, conf):
    stride, padding, transposed, output_padding = conf
    return torch.convolution(x, w, None, (stride, stride), (padding, padding), (1, 1), transposed,
                             output_padding, 1)


class _Conv2d(torch.autograd.Function):
    """y = conv(x, w) for conf (stride, padding, transposed, output_padding), gradients as above."""

    @staticmethod
    def forward(ctx, x, w, conf):
        ctx.save_for_backward(x, w)
        ctx.conf = conf
        return _convolution(x, w, conf)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dx = dw = None
        if _needs_grad(ctx, 0):
            dx = _Conv2d.apply(dy, w, _adjoint(ctx.conf, x.shape, dy.shape, w.shape))
        if _needs_grad(ctx, 1):
            dw = _Conv2dWeightGrad.apply(dy, x, w.detach(), ctx.conf)
        return dx, dw, None


class _Conv2dWeightGrad(torch.autograd.Function):
    """dw = W(dy, x) of the convolution conf with weights shaped like w (a placeholder for its shape)."""

    @staticmethod
    def forward(ctx, dy, x, w, conf):
        ctx.save_for_backward(dy, x)
        ctx.conf, ctx.w_shape = conf, w.shape
        stride, padding, transposed, output_padding = conf
        return torch.ops.aten.convolution_backward(dy, x, w, None, (stride, stride), (padding, padding), (1, 1),
                                                   transposed, output_padding, 1, (False, True, False))[1]

    @staticmethod
    def backward(ctx, ggw):
        dy, x = ctx.saved_tensors
        gdy = gx = None
        if _needs_grad(ctx, 0):
            gdy = _Conv2d.apply(x, ggw, ctx.conf)
        if _needs_grad(ctx, 1):
            gx = _Conv2d.apply(dy, ggw, _adjoint(ctx.conf, x.shape, dy.shape, ctx.w_shape))
        return gdy, gx, None, None


def _foreach_cast(tensors, dtypes):
    """tensors[i] in dtypes[i]: those that change copied in one foreach copy (CUDA's multi_tensor_apply
    converts between dtypes), the others as they are."""
    out, change = list(tensors), [i for i, (t, d) in enumerate(zip(tensors, dtypes)) if t.dtype != d]
    if change:
        cast = [torch.empty_like(tensors[i], dtype=dtypes[i]) for i in change]
        torch._foreach_copy_(cast, [tensors[i] for i in change])
        for i, t in zip(change, cast):
            out[i] = t
    return out


def _foreach_scale(tensors, scales):
    """tensors[i] * scales[i] in one foreach multiply; those whose scale is 1 as they are."""
    out, change = list(tensors), [i for i, s in enumerate(scales) if s != 1.0]
    if change:
        for i, t in zip(change, torch._foreach_mul([tensors[i] for i in change], [scales[i] for i in change])):
            out[i] = t
    return out


class _ScaleCast(torch.autograd.Function):
    """outs[i] = tensors[i] * scales[i], then cast to dtypes[i] (cast_first: cast, then multiply);
    one foreach op per step for the whole list, where autograd would run two ops per tensor. The map
    is linear, and its adjoint is the same two steps in the other order, back to the inputs' dtypes:
    the backward is this Function again, differentiable to any order. Saves no tensor, only the
    scales and the inputs' dtypes."""

    @staticmethod
    def forward(ctx, scales, dtypes, cast_first, *tensors):
        ctx.set_materialize_grads(False)  # an unused output gets no gradient of zeros made for it
        ctx.scales, ctx.dtypes, ctx.cast_first = scales, tuple(t.dtype for t in tensors), cast_first
        if cast_first:
            return tuple(_foreach_scale(_foreach_cast(tensors, dtypes), scales))
        return tuple(_foreach_cast(_foreach_scale(tensors, scales), dtypes))

    @staticmethod
    def backward(ctx, *grads):
        used = [i for i, g in enumerate(grads) if g is not None]
        out = [None] * len(grads)
        if used:
            gs = _ScaleCast.apply(tuple(ctx.scales[i] for i in used), tuple(ctx.dtypes[i] for i in used),
                                  not ctx.cast_first, *(grads[i] for i in used))
            for i, g in zip(used, gs):
                out[i] = g
        return None, None, None, *out


# ----------------------------------------------------------------------------------------------
# Public ops

def _resolve(impl):
    impl = IMPL if impl == "auto" else impl
    if impl not in ("auto", "triton", "ref"):
        raise ValueError(f"impl (or kernels.IMPL / STYLEGAN_IMPL) must be 'auto', 'triton' or 'ref', "
                         f"got {impl!r}")
    return impl


def _use_triton(x, impl):
    """True to run the Triton kernels for tensor x; see the module docstring for the rules."""
    impl = _resolve(impl)
    if impl == "ref":
        return False
    ok = HAS_TRITON and (x.is_cuda or INTERPRET)
    if impl == "triton" and not ok:
        why = ("triton is not installed" if not HAS_TRITON else
               f"the tensor is on {x.device}: Triton needs a CUDA tensor, or TRITON_INTERPRET=1 "
               "set before kernels.py is imported")
        raise RuntimeError(f"impl='triton' requested, but {why}")
    return ok


def noise_adain(x, noise, noise_weight, bias, scale, shift, *, slope=0.2, eps=1e-8, blur=False, w_scale=1.0,
                impl="auto"):
    """StyleGAN layer epilogue, see noise_adain_ref. x [N, C, H, W] (fp32/bf16/fp16, NCHW or
    channels_last); noise [N or 1, 1, H, W] or None; noise_weight, bias [C]; scale, shift [N, C].
    Returns y like x. Statistics in fp32. blur: the epilogue of blur2d(x), the generator's upsampling
    layer (in Triton the blur is read inside the kernels, never written). w_scale: of w_scale * x, the
    equalized-lr scale of the convolution that made x (applied as x is read)."""
    if x.ndim != 4:
        raise ValueError(f"noise_adain: x must be [N, C, H, W], got shape {tuple(x.shape)}")
    N, C, H, W = x.shape
    if noise is not None:
        if noise_weight is None:
            raise ValueError("noise_adain: noise given without noise_weight")
        if noise.ndim != 4 or noise.shape[0] not in (1, N) or tuple(noise.shape[1:]) != (1, H, W):
            raise ValueError(f"noise_adain: noise must be [{N} or 1, 1, {H}, {W}], got {tuple(noise.shape)}")
    for name, p, shape in (("noise_weight", noise_weight if noise is not None else None, (C,)),
                           ("bias", bias, (C,)), ("scale", scale, (N, C)), ("shift", shift, (N, C))):
        if p is not None and tuple(p.shape) != shape:
            raise ValueError(f"noise_adain: {name} must be {list(shape)}, got {list(p.shape)}")
    if not w_scale > 0:  # the gradients divide by it
        raise ValueError(f"noise_adain: w_scale must be > 0, got {w_scale}")
    if not _use_triton(x, impl) or x.numel() == 0:
        x = blur2d(x, impl=impl) if blur else x
        return noise_adain_ref(x, noise, noise_weight, bias, scale, shift, slope, eps, w_scale)
    if noise is not None:  # a [1, 1, H, W] map (noise_mode="const") broadcasts; autograd sums its grad
        noise = noise.expand(N, 1, H, W)
    else:
        noise_weight = None
    return _NoiseAdaIN.apply(x, noise, noise_weight, bias, scale, shift, float(slope), float(eps), bool(blur),
                             float(w_scale))


def _check_mask_args(op, slope, gain, w_scale):
    """The Triton leaky-ReLU kernels' backward reads the sign of u = w_scale * x + b off the sign of
    their output and divides by w_scale: that needs gain > 0, slope >= 0 and w_scale > 0."""
    if not (gain > 0 and slope >= 0 and w_scale > 0):
        raise ValueError(f"{op} (Triton): needs gain > 0, slope >= 0 and w_scale > 0, got gain={gain}, "
                         f"slope={slope}, w_scale={w_scale}")


def bias_lrelu(x, bias, *, slope=0.2, gain=1.0, w_scale=1.0, impl="auto"):
    """y = leaky_relu(w_scale * x + bias[c], slope) * gain for x [N, C] or [N, C, H, W]; y like x.
    w_scale: the equalized-lr scale of the layer that made x from unscaled weights. First and second
    order gradients (R1) in both implementations."""
    if x.ndim < 2 or bias.shape != (x.shape[1],):
        raise ValueError(f"bias_lrelu: x must be [N, C, ...] with bias [C], got x {tuple(x.shape)}, "
                         f"bias {tuple(bias.shape)}")
    if not _use_triton(x, impl):
        return bias_lrelu_ref(x, bias, slope, gain, w_scale)
    _check_mask_args("bias_lrelu", slope, gain, w_scale)
    return _BiasLReLU.apply(x, bias, float(slope), float(gain), float(w_scale))


def blur2d(x, *, impl="auto"):
    """The [1, 2, 1] blur of blur2d_ref, its gradient the same blur (no weight gradient, to any
    order); impl "ref" (or kernels.IMPL) runs the reference under plain autograd."""
    if _resolve(impl) == "ref":
        return blur2d_ref(x)
    return _Blur2d.apply(x)


def bias_lrelu_blur(x, bias, *, slope=0.2, gain=1.0, w_scale=1.0, impl="auto"):
    """blur2d(bias_lrelu(x, bias)) for x [N, C, H, W]: the discriminator's conv -> lrelu -> blur
    before it downsamples. In Triton one pass that writes only the blurred output (the unblurred
    activation is never stored), with gradients of any order (_BiasLReLUBlur), for x NCHW- or
    channels_last-contiguous; elsewhere, or for another layout, the two ops."""
    if x.ndim != 4 or bias.shape != (x.shape[1],):
        raise ValueError(f"bias_lrelu_blur: x must be [N, C, H, W] with bias [C], got x {tuple(x.shape)}, "
                         f"bias {tuple(bias.shape)}")
    if not (_use_triton(x, impl) and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))):
        return blur2d(bias_lrelu(x, bias, slope=slope, gain=gain, w_scale=w_scale, impl=impl), impl=impl)
    _check_mask_args("bias_lrelu_blur", slope, gain, w_scale)
    return _BiasLReLUBlur.apply(x, bias, float(slope), float(gain), float(w_scale))


def bias_lrelu_pool(x, bias, *, slope=0.2, gain=1.0, w_scale=1.0, impl="auto"):
    """bias_lrelu(avg_pool2d(x, 2), bias) for x [N, C, H, W]: the end of the discriminator's
    downsampling layer below FUSED_FROM. In Triton one pass that reads x and writes only the
    half-size activation (the average is never stored), with gradients of any order
    (_BiasLReLUPool), for x NCHW- or channels_last-contiguous with even H and W; elsewhere the two ops."""
    if x.ndim != 4 or bias.shape != (x.shape[1],):
        raise ValueError(f"bias_lrelu_pool: x must be [N, C, H, W] with bias [C], got x {tuple(x.shape)}, "
                         f"bias {tuple(bias.shape)}")
    dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    if not (_use_triton(x, impl) and dense and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.numel()):
        return bias_lrelu(F.avg_pool2d(x, 2), bias, slope=slope, gain=gain, w_scale=w_scale, impl=impl)
    _check_mask_args("bias_lrelu_pool", slope, gain, w_scale)
    return _BiasLReLUPool.apply(x, bias, float(slope), float(gain), float(w_scale))


def minibatch_stddev(x, group_size=4, num_features=1, *, impl="auto"):
    """minibatch_stddev_ref (N a multiple of group_size, C of num_features). In Triton one launch,
    its gradient one more, and that gradient's (R1) a third, instead of about 30 torch ops per D
    pass and its derivatives."""
    if group_size < 1 or num_features < 1:
        raise ValueError(f"minibatch_stddev: group_size and num_features must be >= 1, got {group_size}, "
                         f"{num_features}")
    if x.ndim != 4 or x.shape[0] % group_size or x.shape[1] % num_features:
        raise ValueError(f"minibatch_stddev: x must be [N, C, H, W] with N a multiple of group_size {group_size} "
                         f"and C of num_features {num_features}, got {tuple(x.shape)}")
    if not _use_triton(x, impl):
        return minibatch_stddev_ref(x, group_size, num_features)
    # contiguous() out here, where autograd sees it: the backward's own gradient (R1) reaches x through
    # the tensor the Function saves, so that must be the Function's input
    return _MinibatchStddev.apply(x.contiguous(), int(group_size), int(num_features))


def _autocast(t):
    """t in the dtype autocast gives a convolution's inputs (fp64, and anything outside autocast,
    unchanged), cast before the Function so that its backward, which autocast does not see, meets
    the same dtypes."""
    dev = t.device.type
    if torch.is_autocast_enabled(dev) and t.is_floating_point() and t.dtype != torch.float64:
        return t.to(torch.get_autocast_dtype(dev))
    return t


def conv2d(x, w, *, stride=1, padding=0, transposed=False, impl="auto"):
    """conv2d_ref(x, w, stride, padding, transposed) with its gradients written as convolutions and
    aten.convolution_backward weight gradients (_Conv2d), differentiable to any order without
    autograd's convolution double backward; impl "ref" (or kernels.IMPL) runs the reference."""
    if _resolve(impl) == "ref":
        return conv2d_ref(x, w, stride, padding, transposed)
    return _Conv2d.apply(_autocast(x), _autocast(w), (int(stride), int(padding), bool(transposed), (0, 0)))


def scale_weights(tensors, scales, *, cast=True, impl="auto"):
    """[t * s for t, s in zip(tensors, scales)], the run-time weights of equalized-lr layers, in one
    foreach multiply (_ScaleCast; a tensor whose scale is 1 is not multiplied). Under autocast the
    products that `cast` selects (True: all, or one bool per tensor; not a bias that a kernel reads
    in fp32) also come out in autocast's dtype, in one foreach copy: the cast every convolution and
    matmul would make of its weight (autocast leaves a tensor already in its dtype as it is), the
    same values. fp64 stays fp64, as autocast leaves it.
    The backward casts the gradients back and multiplies by the scales, again one foreach op each.
    (A product used by several ops has its gradients summed in autocast's dtype before that cast,
    where per-op casts would sum them in fp32; G and D use each run-time weight once.)
    impl "ref" (or kernels.IMPL): the plain foreach multiply under autograd, the casts left to autocast.
    A tensor with nothing to do (scale 1, no cast) comes back as it is."""
    tensors, scales = list(tensors), [float(s) for s in scales]
    if not tensors:
        return []
    if _resolve(impl) == "ref":
        return _foreach_scale(tensors, scales)
    dev = tensors[0].device.type
    cast = [cast] * len(tensors) if isinstance(cast, bool) else list(cast)
    to = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
    dtypes = [to if to is not None and c and t.is_floating_point() and t.dtype != torch.float64 else t.dtype
              for t, c in zip(tensors, cast)]
    out, work = list(tensors), [i for i, t in enumerate(tensors) if scales[i] != 1.0 or dtypes[i] != t.dtype]
    if work:
        made = _ScaleCast.apply(tuple(scales[i] for i in work), tuple(dtypes[i] for i in work), False,
                                *(tensors[i] for i in work))
        for i, t in zip(work, made):
            out[i] = t
    return out
