"""kernels.py: every Triton kernel and gradient against its PyTorch reference; the convolutions
with hand-written gradients (blur2d, conv2d) against gradcheck and gradgradcheck.

Runs on CPU through the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1 when there is
no GPU) and on CUDA when present. fp32 results are checked against the reference evaluated in
float64 (the truth) to 1e-5 of the largest reference value; bf16/fp16 against the reference in the
same dtype to 1e-2. Every buffer kernels.py allocates starts out NaN, so an output element a kernel
forgets to write fails. Shapes are small and odd (primes, C=1, H != W); the split-plane path is
forced by lowering kernels.SPLIT_HW.

    pytest tests/test_kernels.py
"""
import functools
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import kernels

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """torch.empty / empty_like return NaN-filled float tensors while a test runs."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan(empty_like(*a, **k)))


def assert_close(got, want, tol, name):
    """Max |got - want| within tol of max |want| (a scale that also suits sums that cancel)."""
    if got is None and want is None:  # e.g. d noise_weight without noise: unused by both
        return
    want = torch.zeros_like(got) if want is None else want  # autograd's None means zero
    got = torch.zeros_like(want) if got is None else got
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got, want = got.double(), want.double()
    assert torch.isfinite(got).all(), f"{name}: non-finite values (an element left unwritten?)"
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= tol * scale or err == 0, f"{name}: max error {err:.2e} = {err / max(scale, 1e-300):.1e} " \
                                           f"of max |ref| {scale:.2e}, tolerance {tol:.0e}"


def randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, device=DEVICE, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# noise_adain

def adain_inputs(shape, noise_mode, channels_last, dtype, seed):
    """x, noise, noise_weight, bias, scale, shift; params fp32 as under autocast, all nonzero."""
    torch.manual_seed(seed)
    N, C, H, W = shape
    x = randn(*shape, dtype=dtype) * 2 + 0.3
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    noise = {None: None, "batch": randn(N, 1, H, W), "grad": randn(N, 1, H, W).requires_grad_(),
             "const": randn(1, 1, H, W).expand(N, 1, H, W)}[noise_mode]
    return x, noise, randn(C), randn(C) * 0.5, randn(N, C) + 1, randn(N, C)


def adain_run(impl, x, noise, noise_weight, bias, scale, shift, dy, dtype=None, blur=False):
    """y and the gradients of (x, noise_weight, bias, scale, shift[, noise if it requires grad])
    for upstream dy, the inputs first cast to dtype (float64 for the truth); blur: of blur2d(x)."""
    cast = (lambda t: t) if dtype is None else (lambda t: t.to(dtype))
    leaves = [cast(t).detach().requires_grad_(True) for t in (x, noise_weight, bias, scale, shift)]
    nz = None if noise is None else cast(noise).detach().requires_grad_(noise.requires_grad)
    y = kernels.noise_adain(leaves[0], nz, *leaves[1:], blur=blur, impl=impl)
    inputs = leaves + ([nz] if nz is not None and nz.requires_grad else [])
    grads = torch.autograd.grad(y, inputs, cast(dy), allow_unused=True)
    return y, grads


ADAIN_CASES = [  # shape, noise, channels_last, SPLIT_HW (None: the default 4096)
    ((2, 3, 4, 4), "batch", False, None),   # the 4x4 layers: several planes per program
    ((3, 5, 7, 3), None, False, None),      # primes, H != W, no noise
    ((1, 1, 5, 9), "batch", False, None),   # one channel, one sample
    ((2, 3, 1, 7), "grad", False, None),    # H = 1; gradient for the noise too
    ((2, 4, 13, 11), "batch", False, 64),   # planes split in 3 chunks, the last ragged
    ((1, 2, 67, 65), "const", False, None), # default threshold: 4355 > 4096 elements split in 2
    ((2, 6, 5, 7), "const", True, None),    # channels_last, one [1, 1, H, W] map for the batch
    ((2, 40, 6, 5), "grad", True, 64),      # channels_last split, ragged channel block
]


@pytest.mark.parametrize("shape,noise_mode,channels_last,split_hw", ADAIN_CASES)
def test_noise_adain_fp32(shape, noise_mode, channels_last, split_hw, monkeypatch):
    if split_hw is not None:
        monkeypatch.setattr(kernels, "SPLIT_HW", split_hw)
    N, C, H, W = shape
    n_chunks = kernels._adain_plan(C, H * W, channels_last)[2]
    assert (n_chunks > 1) == (split_hw is not None or H * W > kernels.SPLIT_HW)  # the path meant
    args = adain_inputs(shape, noise_mode, channels_last, torch.float32, seed=sum(shape))
    dy = randn(*shape)
    y, grads = adain_run("triton", *args, dy)
    y64, grads64 = adain_run("ref", *args, dy, dtype=torch.float64)
    assert y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    names = ["y", "dx", "dnoise_weight", "dbias", "dscale", "dshift", "dnoise"]
    for name, got, want in zip(names, (y, *grads), (y64, *grads64)):
        assert_close(got, want, 1e-5, name)


@pytest.mark.parametrize("shape,noise_mode,channels_last,split_hw", [ADAIN_CASES[i] for i in (0, 3, 4, 6, 7)])
def test_noise_adain_of_the_blurred_input(shape, noise_mode, channels_last, split_hw, monkeypatch):
    """blur=True (the generator's upsampling layer): the kernels read blur2d(x) from x's 3x3
    neighbourhoods; y and every gradient against noise_adain_ref(blur2d_ref(x)) in fp64, on whole and
    split planes, NCHW and channels_last, one-pixel-high planes."""
    if split_hw is not None:
        monkeypatch.setattr(kernels, "SPLIT_HW", split_hw)
    args = adain_inputs(shape, noise_mode, channels_last, torch.float32, seed=sum(shape) + 1)
    dy = randn(*shape)
    y, grads = adain_run("triton", *args, dy, blur=True)
    y64, grads64 = adain_run("ref", *args, dy, dtype=torch.float64, blur=True)
    names = ["y", "dx", "dnoise_weight", "dbias", "dscale", "dshift", "dnoise"]
    for name, got, want in zip(names, (y, *grads), (y64, *grads64)):
        assert_close(got, want, 1e-5, name)
    unblurred, _ = adain_run("ref", *args, dy, dtype=torch.float64)
    assert not torch.allclose(unblurred, y64)  # the blur is there


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,noise_mode,channels_last,split_hw", [ADAIN_CASES[i] for i in (0, 4, 5, 7)])
def test_noise_adain_half(shape, noise_mode, channels_last, split_hw, dtype, monkeypatch):
    if split_hw is not None:
        monkeypatch.setattr(kernels, "SPLIT_HW", split_hw)
    args = adain_inputs(shape, noise_mode, channels_last, dtype, seed=sum(shape) + 1)
    dy = randn(*shape, dtype=dtype)
    y, grads = adain_run("triton", *args, dy)
    y_ref, grads_ref = adain_run("ref", *args, dy)
    assert y.dtype == dtype and grads[0].dtype == dtype and grads[1].dtype == torch.float32
    names = ["y", "dx", "dnoise_weight", "dbias", "dscale", "dshift", "dnoise"]
    for name, got, want in zip(names, (y, *grads), (y_ref, *grads_ref)):
        assert_close(got, want, 1e-2, name)


@pytest.mark.parametrize("channels_last", [False, True])
def test_noise_adain_split_statistics(channels_last, monkeypatch):
    """The split path's combined plane statistics (per-chunk mean and M2 merged by Chan's formula in
    _adain_combine_stats_kernel) equal the plain mean and biased variance of t = leaky_relu(u) in
    float64, to 1e-5 of the largest value, with a last chunk much shorter than the others. An offset
    mean makes a combine that weighted chunks by the full chunk size fail."""
    monkeypatch.setattr(kernels, "SPLIT_HW", 64)
    shape = (2, 40, 13, 11) if channels_last else (3, 2, 13, 11)  # 143 positions: chunks 64, 64, 15 (NCHW)
    _, BLOCK_HW, n_chunks = kernels._adain_plan(shape[1], 143, channels_last)
    assert n_chunks > 1 and 143 % BLOCK_HW != 0  # split, the last chunk partial
    x, noise, nw, bias, scale, shift = adain_inputs(shape, "batch", channels_last, torch.float32, seed=6)
    x = x + torch.linspace(-3, 5, shape[1], device=DEVICE).view(1, -1, 1, 1)  # a different mean per channel
    _, mean, rstd = kernels._adain_forward(x, noise, nw, bias, scale, shift, 0.2, 1e-8)
    u = x.double() + nw.double().view(1, -1, 1, 1) * noise.double() + bias.double().view(1, -1, 1, 1)
    t = F.leaky_relu(u, 0.2)
    assert_close(mean, t.mean((2, 3)), 1e-5, "mean")
    assert_close(rstd, torch.rsqrt(t.var((2, 3), unbiased=False) + 1e-8), 1e-5, "rstd")


def test_noise_adain_strided_style_and_grad():
    """scale/shift as chunk() views of one [N, 2C] style, as the model passes them, and an
    expanded (stride 0) upstream gradient."""
    x, noise, nw, bias, _, _ = adain_inputs((2, 5, 6, 6), "batch", False, torch.float32, seed=3)
    style, dy = randn(2, 10), randn(1, 1, 6, 6).expand(2, 5, 6, 6)  # stride 0 over n and c
    outs = []
    for impl in ("triton", "ref"):
        leaves = [t.detach().requires_grad_(True) for t in (x, nw, bias, style)]
        ys, yb = leaves[3].chunk(2, dim=1)
        y = kernels.noise_adain(leaves[0], noise, leaves[1], leaves[2], ys + 1, yb, impl=impl)
        outs.append((y, *torch.autograd.grad(y, leaves, dy)))
    for name, got, want in zip(["y", "dx", "dnoise_weight", "dbias", "dstyle"], *outs):
        assert_close(got, want, 1e-5, name)


# ----------------------------------------------------------------------------------------------
# bias_lrelu

LRELU_CASES = [  # shape, channels_last
    ((5, 7), False),            # mapping network / dense layer [N, C]
    ((300, 7), False),          # [N, C] over two programs, the last ragged
    ((2, 3, 5, 4), False),
    ((3, 1, 4, 4), False),      # one channel
    ((2, 3, 1, 1), False),      # 1x1 planes
    ((2, 3, 37, 41), False),    # planes larger than one program
    ((2, 5, 19, 23), True),     # channels_last
    ((1, 2, 50, 53), False),    # a plane over two programs: the bias gradient from partial sums
    ((1, 3, 4, 5), False),      # one tile per channel: its sums are the bias gradient, no reduction
]


@pytest.mark.parametrize("gain", [1.0, math.sqrt(2)])
@pytest.mark.parametrize("shape,channels_last", LRELU_CASES)
def test_bias_lrelu_fp32(shape, channels_last, gain):
    torch.manual_seed(sum(shape))
    x, bias, dy = randn(*shape), randn(shape[1]), randn(*shape)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    outs = []
    for impl, dtype in (("triton", torch.float32), ("ref", torch.float64)):
        xx, bb = (t.to(dtype).requires_grad_(True) for t in (x, bias))
        y = kernels.bias_lrelu(xx, bb, gain=gain, impl=impl)
        outs.append((y, *torch.autograd.grad(y, (xx, bb), dy.to(dtype))))
    assert outs[0][0].stride() == x.stride()
    for name, got, want in zip(["y", "dx", "dbias"], *outs):
        assert_close(got, want, 1e-5, name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,channels_last", [LRELU_CASES[i] for i in (1, 5, 6)])
def test_bias_lrelu_half(shape, channels_last, dtype):
    """x in half precision with an fp32 bias, as under autocast."""
    torch.manual_seed(sum(shape) + 1)
    x, bias, dy = randn(*shape, dtype=dtype), randn(shape[1]), randn(*shape, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    outs = []
    for impl in ("triton", "ref"):
        xx, bb = x.detach().requires_grad_(True), bias.detach().requires_grad_(True)
        y = kernels.bias_lrelu(xx, bb, gain=math.sqrt(2), impl=impl)
        outs.append((y, *torch.autograd.grad(y, (xx, bb), dy)))
    assert outs[0][0].dtype == dtype and outs[0][2].dtype == torch.float32
    for name, got, want in zip(["y", "dx", "dbias"], *outs):
        assert_close(got, want, 1e-2, name)


def test_bias_lrelu_ref_gradgradcheck():
    """The reference is twice differentiable in x and bias (float64 finite differences)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: kernels.bias_lrelu_ref(x, b, 0.2, math.sqrt(2))
    assert torch.autograd.gradcheck(fn, (x, bias))
    assert torch.autograd.gradgradcheck(fn, (x, bias))


@pytest.mark.parametrize("channels_last", [False, True])
def test_bias_lrelu_second_order(channels_last, no_tf32):
    """R1 as the discriminator computes it: the squared input gradient of a small conv + dense net,
    differentiated again with respect to every parameter and the input."""
    torch.manual_seed(1)
    x, W1, b1 = randn(3, 2, 5, 6), randn(4, 2, 3, 3) * 0.5, randn(4)
    W2, b2, v = randn(4 * 5 * 6, 7) * 0.1, randn(7), randn(3, 7)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    outs = []
    for impl, dtype in (("triton", torch.float32), ("ref", torch.float64)):
        leaves = [t.to(dtype).detach().requires_grad_(True) for t in (x, W1, b1, W2, b2)]
        xx, w1, bb1, w2, bb2 = leaves
        h = kernels.bias_lrelu(F.conv2d(xx, w1, padding=1), bb1, gain=math.sqrt(2), impl=impl)
        out = kernels.bias_lrelu(h.flatten(1) @ w2, bb2, gain=math.sqrt(2), impl=impl)
        gx, = torch.autograd.grad((out * v.to(dtype)).sum(), xx, create_graph=True)
        r1 = gx.square().sum()
        outs.append((gx, *torch.autograd.grad(r1, leaves, allow_unused=True)))
    for name, got, want in zip(["dD/dx", "dR1/dx", "dR1/dW1", "dR1/db1", "dR1/dW2", "dR1/db2"], *outs):
        assert_close(got, want, 1e-5, name)


def away_from_kink(t, margin=0.05):
    """t with every |element| >= margin, so finite differences of size < margin in x + b (bias 0)
    never cross the leaky ReLU's kink."""
    return torch.where(t.abs() < margin, t + margin * torch.where(t < 0, -1.0, 1.0), t)


@pytest.mark.parametrize("shape,channels_last", [((2, 3, 2, 3), False), ((2, 3, 3, 2), True), ((4, 3), False)])
def test_bias_lrelu_triton_gradgradcheck(shape, channels_last):
    """The Triton op's first and second order gradients in x and bias (the bias gradient summed in
    the gradient kernel) against finite differences. The kernels compute in fp32, so the step is
    1e-2 and the tolerance 1e-3; the function is piecewise linear, so such a step is exact away from
    the kink."""
    torch.manual_seed(2)
    x = away_from_kink(torch.randn(*shape, device=DEVICE, dtype=torch.float64))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x, bias = x.requires_grad_(True), torch.zeros(shape[1], device=DEVICE, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: kernels.bias_lrelu(x, b, gain=math.sqrt(2), impl="triton")
    tol = dict(eps=1e-2, atol=1e-3, rtol=1e-3)
    assert torch.autograd.gradcheck(fn, (x, bias), **tol)
    assert torch.autograd.gradgradcheck(fn, (x, bias), **tol)


BLUR_CASES = [(2, 3, 5, 7), (1, 2, 1, 1), (3, 2, 64, 48)]  # odd sizes, one pixel, planes over one tile


@pytest.mark.parametrize("shape", BLUR_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_bias_lrelu_blur_is_the_two_ops(shape, dtype, layout):
    """The fused kernel's output, dx and db against blur2d_ref(bias_lrelu_ref(...)) in the same dtype
    (fp64: to 1e-12; fp32 1e-5, the bias sums cancel; bf16 1e-2, its output rounding), gain sqrt(2) and 1,
    NCHW and channels_last (whose rows are positions, the neighbours whole rows)."""
    torch.manual_seed(3)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    for gain in (math.sqrt(2), 1.0):
        x = randn(*shape).to(dtype).contiguous(memory_format=layout).requires_grad_(True)
        bias = randn(shape[1]).to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_(True)
        g = randn(*shape).to(dtype)
        outs = []
        for fn in (kernels.bias_lrelu_blur, kernels.bias_lrelu_blur_ref):
            y = fn(x, bias, gain=gain, **({"impl": "triton"} if fn is kernels.bias_lrelu_blur else {}))
            outs.append((y, *torch.autograd.grad((y.float() * g.float()).sum(), (x, bias))))
        for name, got, want in zip(["y", "dx", "db"], *outs):
            assert_close(got, want, tol, f"{name} {dtype} gain {gain:.3f}")


def assert_r1_through(op, ref, x_hw, out_hw, layout, out_c=4, **kw):
    """R1 through conv -> op -> dense (a discriminator layer in small; op's output has out_c
    channels), the Triton op (its input in layout) against the reference ops, both in fp64, to
    1e-12: the input gradient and its squared norm's gradient in every parameter, then the same from
    a first pass that also takes every parameter's gradient (the bias summed in the kernel)."""
    x, W1, b1 = randn(3, 2, *x_hw), randn(4, 2, 3, 3) * 0.5, randn(4)
    W2, b2, v = randn(out_c * out_hw[0] * out_hw[1], 7) * 0.1, randn(7), randn(3, 7)
    outs = []
    for fused in (True, False):
        x, W1 = (t.contiguous(memory_format=layout if fused else torch.contiguous_format) for t in (x, W1))
        leaves = [t.double().detach().requires_grad_(True) for t in (x, W1, b1, W2, b2)]
        xx, w1, bb1, w2, bb2 = leaves

        def loss():
            conv = F.conv2d(xx, w1, padding=1)
            h = op(conv, bb1, impl="triton", **kw) if fused else ref(conv, bb1, **kw)
            return (kernels.bias_lrelu_ref(h.flatten(1) @ w2, bb2, gain=math.sqrt(2)) * v.double()).sum()

        gx, = torch.autograd.grad(loss(), xx, create_graph=True)
        second = torch.autograd.grad(gx.square().sum(), leaves, allow_unused=True)
        first = torch.autograd.grad(loss(), leaves, create_graph=True)
        again = torch.autograd.grad(sum(t.square().sum() for t in first), leaves, allow_unused=True)
        outs.append((gx, *second, *first, *again))
    names = ["dD/dx"] + [f"{k}/d{p}" for k in ("dR1", "d", "d|d|^2") for p in ("x", "W1", "b1", "W2", "b2")]
    for name, got, want in zip(names, *outs):
        assert_close(got, want, 1e-12, name)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_bias_lrelu_blur_second_order(layout):
    """R1 through conv -> bias_lrelu_blur -> dense (a discriminator block in small), fused against the
    two reference ops (assert_r1_through); the fused side in NCHW and in channels_last."""
    torch.manual_seed(4)
    assert_r1_through(kernels.bias_lrelu_blur, kernels.bias_lrelu_blur_ref, (6, 5), (6, 5), layout,
                      gain=math.sqrt(2), w_scale=0.3)


def test_bias_lrelu_blur_gradgradcheck():
    """First and second order gradients of the fused op in x and bias against finite differences
    (fp64 throughout, so gradcheck's default step and tolerances)."""
    torch.manual_seed(5)
    x = away_from_kink(torch.randn(1, 2, 3, 4, device=DEVICE, dtype=torch.float64)).requires_grad_(True)
    bias = torch.zeros(2, device=DEVICE, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: kernels.bias_lrelu_blur(x, b, gain=math.sqrt(2), impl="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, bias))
    assert torch.autograd.gradgradcheck(fn, (x, bias))


POOL_CASES = [(2, 3, 6, 8), (1, 2, 2, 2), (3, 2, 64, 48)]  # uneven sides, a 1x1 result, over one tile


@pytest.mark.parametrize("shape", POOL_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_bias_lrelu_pool_is_the_two_ops(shape, dtype, layout):
    """The fused kernel's output, dx and db against bias_lrelu_ref(avg_pool2d(x, 2)) in the same
    dtype (fp64: to 1e-12; fp32 1e-5), or for bf16 x (1e-2: its output rounding) in fp32, as the
    kernel averages (the two bf16 ops would round the average first and move the leaky ReLU's kink
    for values near it); gain sqrt(2) and 1, NCHW and channels_last."""
    torch.manual_seed(7)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    N, C, H, W = shape
    for gain in (math.sqrt(2), 1.0):
        x = randn(*shape).to(dtype).contiguous(memory_format=layout).requires_grad_(True)
        bias = randn(C).to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_(True)
        g = randn(N, C, H // 2, W // 2).to(dtype)
        outs = []
        for fn in (kernels.bias_lrelu_pool, kernels.bias_lrelu_pool_ref):
            fused = fn is kernels.bias_lrelu_pool
            xin = x if fused or dtype != torch.bfloat16 else x.float()
            y = fn(xin, bias, gain=gain, **({"impl": "triton"} if fused else {}))
            outs.append((y, *torch.autograd.grad((y.float() * g.float()).sum(), (x, bias))))
        assert outs[0][0].is_contiguous(memory_format=layout) and outs[0][0].dtype == dtype
        assert outs[0][1].is_contiguous(memory_format=layout)
        for name, got, want in zip(["y", "dx", "db"], *outs):
            assert_close(got, want, tol, f"{name} {dtype} gain {gain:.3f}")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_bias_lrelu_pool_second_order(layout):
    """R1 through conv -> bias_lrelu_pool -> dense (a discriminator's downsampling layer in small),
    fused against the reference ops (assert_r1_through); the fused side in NCHW and channels_last."""
    torch.manual_seed(8)
    assert_r1_through(kernels.bias_lrelu_pool, kernels.bias_lrelu_pool_ref, (6, 4), (3, 2), layout,
                      gain=math.sqrt(2), w_scale=0.3)


def test_bias_lrelu_pool_gradgradcheck():
    """First and second order gradients of the fused op in x and bias against finite differences
    (fp64, gradcheck's default step and tolerances; x away from the kink after the average)."""
    torch.manual_seed(9)
    x = torch.randn(1, 2, 4, 6, device=DEVICE, dtype=torch.float64)
    x = (x + away_from_kink(F.avg_pool2d(x, 2)).repeat_interleave(2, 2).repeat_interleave(2, 3)
         - F.avg_pool2d(x, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)).requires_grad_(True)
    bias = torch.zeros(2, device=DEVICE, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: kernels.bias_lrelu_pool(x, b, gain=math.sqrt(2), impl="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, bias))
    assert torch.autograd.gradgradcheck(fn, (x, bias))


def test_bias_lrelu_pool_falls_back_to_the_two_ops():
    """Odd sides or a strided x: the two ops (avg_pool2d then bias_lrelu), the same values."""
    torch.manual_seed(10)
    bias = randn(3)
    for x in (randn(2, 3, 5, 4), randn(2, 3, 8, 8)[:, :, ::2, :4]):
        assert_close(kernels.bias_lrelu_pool(x, bias, impl="triton"), kernels.bias_lrelu_pool_ref(x, bias), 1e-6,
                      str(tuple(x.shape)))


# ----------------------------------------------------------------------------------------------
# minibatch_stddev

MBSTD_CASES = [  # shape, group, features: the official layer; odd groups, sides and features; columns over one
    # block; stat planes over one block
    ((8, 6, 4, 4), 4, 1), ((6, 12, 3, 5), 3, 2), ((2, 3, 1, 1), 2, 3), ((4, 160, 4, 4), 4, 1), ((4, 1, 40, 40), 4, 1)]


@pytest.mark.parametrize("shape,group,features", MBSTD_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_minibatch_stddev_is_the_reference(shape, group, features, dtype):
    """Forward and input gradient (the stat maps' gradient included) against minibatch_stddev_ref:
    fp64 to 1e-12, fp32 to 1e-5, bf16 within a rounding of its output (statistics in fp32 in both)."""
    torch.manual_seed(11)
    x = randn(*shape, dtype=dtype)
    dy = randn(shape[0], shape[1] + features, *shape[2:], dtype=dtype)
    outs = []
    for fn in (functools.partial(kernels.minibatch_stddev, impl="triton"), kernels.minibatch_stddev_ref):
        xx = x.detach().requires_grad_(True)
        y = fn(xx, group, features)
        outs.append((y, *torch.autograd.grad(y, xx, dy)))
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    for name, got, want in zip(("y", "dx"), *outs):
        assert got.dtype == want.dtype == dtype
        assert_close(got, want, tol, name)
    assert torch.equal(outs[0][0][:, :shape[1]], x)  # x's channels are copied as they are


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_minibatch_stddev_second_order(layout):
    """R1 through conv -> bias_lrelu -> minibatch_stddev -> dense (the end of the discriminator in
    small, group 3 of 3 samples, 2 features), the Triton layer against the reference, fp64, 1e-12."""
    torch.manual_seed(12)
    op = lambda h, b, impl: kernels.minibatch_stddev(kernels.bias_lrelu_ref(h, b), 3, 2, impl=impl)  # noqa: E731
    ref = lambda h, b: kernels.minibatch_stddev_ref(kernels.bias_lrelu_ref(h, b), 3, 2)  # noqa: E731
    assert_r1_through(op, ref, (3, 2), (3, 2), layout, out_c=6)


def test_minibatch_stddev_gradgradcheck():
    """First and second order gradients of the Triton layer against finite differences (fp64; small:
    every finite difference is an interpreted launch on a CPU)."""
    torch.manual_seed(13)
    x = torch.randn(2, 4, 1, 2, device=DEVICE, dtype=torch.float64, requires_grad=True)
    fn = lambda x: kernels.minibatch_stddev(x, 2, 2, impl="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("op", ["noise_adain", "noise_adain_blur", "bias_lrelu", "bias_lrelu_blur", "bias_lrelu_pool"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_w_scale_is_the_scaled_input(op, layout, monkeypatch):
    """w_scale, the equalized-lr scale of the conv before an epilogue, applied by the epilogue:
    op(x, w_scale=s) is op(s * x) between a layer before and one after it: the output and the
    gradients of every input; for the discriminator's ops (bias_lrelu, _blur, _pool) also R1's
    second order, from a first pass in x alone (no bias gradient, as R1 takes it) and from one in
    everything (the bias gradient summed in the kernel), in every parameter. fp64: the reference to
    1e-12, the Triton kernels to 1e-5 (they compute in fp32; the blur and pool kernels in fp64,
    1e-12), on split planes (noise_adain), NCHW and channels_last."""
    if not (torch.cuda.is_available() or kernels.INTERPRET):
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
    monkeypatch.setattr(kernels, "SPLIT_HW", 16)  # 6x4 planes in two chunks
    torch.manual_seed(6)
    scale = 0.0371
    x = randn(2, 3, 6, 4, dtype=torch.float64)
    g = randn(2, 3, 3, 2, dtype=torch.float64) if op.endswith("pool") else randn(2, 3, 6, 4, dtype=torch.float64)
    x = x.contiguous(memory_format=layout)
    # a per-channel weight before and after the op, the bias; then noise weight, style scale, shift, noise
    params = [randn(1, 3, 1, 1, dtype=torch.float64), randn(1, 3, 1, 1, dtype=torch.float64),
              randn(3, dtype=torch.float64) * 0.3]
    if op.startswith("noise_adain"):
        params += [randn(3, dtype=torch.float64), randn(2, 3, dtype=torch.float64) + 1,
                   randn(2, 3, dtype=torch.float64), randn(2, 1, 6, 4, dtype=torch.float64)]
    second = not op.startswith("noise_adain")

    def run(impl, scaled_inside):
        leaves = [t.detach().requires_grad_(True) for t in (x, *params)]
        xx, w, w2, bias, *rest = leaves

        def loss():
            inp, kw = (xx * w, {"w_scale": scale}) if scaled_inside else (xx * w * scale, {})
            if op.startswith("noise_adain"):
                nw, sc, sh, noise = rest
                y = kernels.noise_adain(inp, noise, nw, bias, sc, sh, blur=op.endswith("blur"), impl=impl, **kw)
            else:
                y = getattr(kernels, op)(inp, bias, gain=math.sqrt(2), impl=impl, **kw)
            return (y * w2 * g).sum()

        out = list(torch.autograd.grad(loss(), leaves, create_graph=second))
        if second:
            gx, = torch.autograd.grad(loss(), xx, create_graph=True)  # R1's pass: no bias gradient
            out += torch.autograd.grad(gx.square().sum(), (xx, w, w2, bias), allow_unused=True)
            out += torch.autograd.grad(out[0].square().sum(), (xx, w, w2, bias), allow_unused=True)
        return [t.detach() if t is not None else None for t in out]

    names = ["dx", "dw", "dw2", "dbias"]
    names += [f"{r}/{p}" for r in ("dR1", "d|dx|^2") for p in names] if second else \
        ["dnoise_weight", "dscale", "dshift", "dnoise"]
    for impl in ("ref", "triton"):
        tol = 1e-12 if impl == "ref" or op in ("bias_lrelu_blur", "bias_lrelu_pool") else 1e-5
        got, want = run(impl, True), run(impl, False)
        assert len(got) == len(names)
        for name, a, b in zip(names, got, want):
            assert_close(a, b, tol, f"{impl} {name}")


def test_bias_lrelu_blur_falls_back_to_the_two_ops(monkeypatch):
    """Neither NCHW- nor channels_last-contiguous input (here a strided view), or impl="ref": the two
    ops, with the same values."""
    torch.manual_seed(6)
    x, bias = randn(2, 3, 5, 8)[..., ::2], randn(3)
    want = kernels.bias_lrelu_blur_ref(x, bias)
    calls = []
    monkeypatch.setattr(kernels, "_lrelu_blur", lambda *a, **k: calls.append(1))
    for impl, t in (("triton", x), ("ref", x)):
        assert_close(kernels.bias_lrelu_blur(t, bias, impl=impl), want, 1e-6, impl)
    assert not calls


CONV_CASES = [  # stride, padding, transposed, kernel: the convolutions of StyleGAN's G and D
    (1, 1, False, 3), (1, 0, False, 1), (2, 1, False, 4), (2, 1, True, 4), (1, 1, True, 3)]


@pytest.mark.parametrize("stride,padding,transposed,k", CONV_CASES)
def test_conv2d_gradients(stride, padding, transposed, k):
    """kernels.conv2d equals the reference exactly, and its hand-written gradients (convolutions and
    weight-only convolution_backward) pass gradcheck and gradgradcheck in fp64, to the third order
    (what differentiating R1's penalty once more would need)."""
    torch.manual_seed(3)
    f64 = dict(device=DEVICE, dtype=torch.float64)
    x = torch.randn(2, 3, 7, 6, **f64, requires_grad=True)
    w = torch.randn(*((3, 2) if transposed else (2, 3)), k, k, **f64, requires_grad=True)
    fn = lambda x, w: kernels.conv2d(x, w, stride=stride, padding=padding, transposed=transposed)
    assert torch.equal(fn(x, w), kernels.conv2d_ref(x, w, stride, padding, transposed))
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(lambda x, w: torch.autograd.grad(
        fn(x, w).square().sum(), (x, w), create_graph=True), (x, w))


def test_blur2d_gradients():
    """The blur's gradient is the blur: equal to the reference's, and twice differentiable."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 5, 7, device=DEVICE, dtype=torch.float64, requires_grad=True)
    assert torch.equal(kernels.blur2d(x), kernels.blur2d_ref(x))
    dy = torch.randn(2, 3, 5, 7, device=DEVICE, dtype=torch.float64)
    got, = torch.autograd.grad(kernels.blur2d(x), x, dy)
    want, = torch.autograd.grad(kernels.blur2d_ref(x), x, dy)
    assert_close(got, want, 1e-14, "dx")
    assert torch.autograd.gradcheck(kernels.blur2d, (x,))
    assert torch.autograd.gradgradcheck(kernels.blur2d, (x,))


def test_r1_first_order_pass_computes_no_parameter_gradient(monkeypatch):
    """autograd.grad(D(x), x) with create_graph (R1's first pass) neither sums a bias gradient nor
    runs a weight gradient, as torch's own convolution backward would not; backward() to the
    parameters does both."""
    calls = {"bias": 0, "weight": 0}
    for key, fn in (("bias", kernels._LReLUGradBias), ("weight", kernels._Conv2dWeightGrad)):
        real = fn.apply
        monkeypatch.setattr(fn, "apply", lambda *a, key=key, real=real: (calls.update({key: calls[key] + 1}),
                                                                          real(*a))[1])
    torch.manual_seed(5)
    x, w, b = (t.requires_grad_(True) for t in (randn(2, 3, 6, 6), randn(4, 3, 3, 3), randn(4)))
    out = kernels.bias_lrelu(kernels.blur2d(kernels.conv2d(x, w, padding=1)), b, impl="triton")
    gx, = torch.autograd.grad(out.sum(), x, create_graph=True)
    assert calls == {"bias": 0, "weight": 0}
    (out.square().mean() + gx.square().sum()).backward()
    assert calls["bias"] > 0 and calls["weight"] > 0
    assert w.grad is not None and b.grad is not None


# ----------------------------------------------------------------------------------------------
# scale_weights

def weight_list(dtype=torch.float32):
    """Equalized-lr weights as G and D hold them: a 3x3 kernel, the 4x4 kernel of a fused upsampling
    conv (used transposed, so its gradient arrives non-contiguous), a dense weight and a bias, with
    their scales."""
    torch.manual_seed(7)
    ts = [randn(4, 3, 3, 3, dtype=dtype), randn(3, 4, 4, 4, dtype=dtype), randn(6, 11, dtype=dtype),
          randn(6, dtype=dtype)]
    scales = [math.sqrt(2 / 27), 4 * math.sqrt(2 / 64), 0.01 * math.sqrt(2 / 11), 0.01]  # none a power of 2
    return [t.requires_grad_(True) for t in ts], scales


def test_scale_weights_values_and_dtypes():
    """Bitwise the plain products t * s; under bf16 autocast the products cast to bf16 (as a
    convolution or matmul would cast its weight), except those `cast` leaves out and fp64 ones."""
    ts, scales = weight_list()
    plain = [t * s for t, s in zip(ts, scales)]
    got = kernels.scale_weights(ts, scales)
    assert all(g.dtype == torch.float32 and torch.equal(g, p) for g, p in zip(got, plain))
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        got = kernels.scale_weights(ts, scales, cast=[True, True, True, False])
        f64 = kernels.scale_weights([t.double() for t in ts[:1]], scales[:1])
    assert [g.dtype for g in got] == [torch.bfloat16] * 3 + [torch.float32]
    assert all(torch.equal(g, p.to(g.dtype)) for g, p in zip(got, plain))
    assert f64[0].dtype == torch.float64
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=False):  # R1's fp32 pass: no cast
        assert all(g.dtype == torch.float32 for g in kernels.scale_weights(ts, scales))


def test_scale_weights_under_autocast_equals_plain():
    """A conv, a transposed conv and a dense layer under bf16 autocast, with weights from
    scale_weights (already bf16: autocast casts them no more) and from the plain products (autocast
    casts each): outputs and weight gradients (cast back to fp32, times the scale) bitwise equal.
    Each weight is used once, as in G and D."""
    ts, scales = weight_list()
    x, x2, h = randn(2, 3, 6, 6), randn(2, 4, 3, 3), randn(2, 11)
    outs = []
    for ws in (lambda: [t * s for t, s in zip(ts, scales)], lambda: kernels.scale_weights(ts, scales)):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            w1, w2, w3, b = ws()
            y = F.conv2d(x, w1, padding=1).float().square().sum() + F.conv_transpose2d(
                x2, w2.transpose(0, 1), stride=2, padding=1).float().square().sum()
            y = y + F.linear(h, w3, b).float().square().sum()
        outs.append((y, *torch.autograd.grad(y, ts)))
    for name, got, want in zip(["y", "dw_conv", "dw_transposed", "dw_dense", "dbias"], *outs):
        assert got.dtype == want.dtype and torch.equal(got, want), name


def test_scale_weights_backward_is_differentiable():
    """gradcheck and gradgradcheck in fp64; and in the cast path, the gradient of the backward
    (v -> v cast to fp32 times s) is the forward again (u -> u times s cast to bf16), bitwise."""
    ts, scales = weight_list(torch.float64)
    fn = lambda *ts: tuple(kernels.scale_weights(ts, scales))
    assert torch.autograd.gradcheck(fn, tuple(ts))
    assert torch.autograd.gradgradcheck(fn, tuple(ts))
    ts, scales = weight_list()
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        ws = kernels.scale_weights(ts, scales)
    vs = [randn(*w.shape).to(torch.bfloat16).requires_grad_(True) for w in ws]
    gs = torch.autograd.grad(ws, ts, vs, create_graph=True)
    assert all(g.dtype == torch.float32 and torch.equal(g, v.float() * s) for g, v, s in zip(gs, vs, scales))
    us = [randn(*t.shape) for t in ts]
    ggs = torch.autograd.grad(gs, vs, us)
    assert all(gg.dtype == torch.bfloat16 and torch.equal(gg, (u * s).to(torch.bfloat16))
               for gg, u, s in zip(ggs, us, scales))


def test_scale_weights_r1_equals_plain():
    """R1 through a small D (conv, leaky ReLU, blur, stride-2 conv, dense) in fp64: the logits'
    gradient in the input, and the gradients of logits.sum() + R1 in every parameter, with the
    weights from scale_weights equal those with the plain per-tensor products to 1e-12."""
    torch.manual_seed(8)
    f64 = dict(device=DEVICE, dtype=torch.float64)
    x = torch.randn(3, 2, 8, 8, **f64)
    params = [torch.randn(*s, **f64) for s in ((4, 2, 3, 3), (4,), (5, 4, 4, 4), (5,), (1, 5 * 16))]
    scales = [1 / math.sqrt(18), 1.0, 1 / math.sqrt(64), 1.0, 1 / math.sqrt(80)]
    outs = []
    for scale in (lambda ps: [p * s for p, s in zip(ps, scales)], lambda ps: kernels.scale_weights(ps, scales)):
        xx, ps = x.clone().requires_grad_(True), [p.clone().requires_grad_(True) for p in params]
        w1, b1, w2, b2, w3 = scale(ps)
        h = kernels.bias_lrelu(kernels.conv2d(xx, w1, padding=1), b1, gain=math.sqrt(2))
        h = kernels.bias_lrelu(kernels.conv2d(kernels.blur2d(h), w2, stride=2, padding=1), b2, gain=math.sqrt(2))
        logits = F.linear(h.flatten(1), w3)
        gx, = torch.autograd.grad(logits.sum(), xx, create_graph=True)
        loss = logits.sum() + gx.square().sum()
        outs.append((gx, *torch.autograd.grad(loss, ps)))
    for name, got, want in zip(["dD/dx", "dW1", "db1", "dW2", "db2", "dW3"], *outs):
        assert_close(got, want, 1e-12, name)


# ----------------------------------------------------------------------------------------------
# Dispatch and input checks

def test_impl_switch(monkeypatch):
    x, noise, nw, bias, scale, shift = adain_inputs((2, 3, 4, 4), "batch", False, torch.float32, seed=0)

    def boom(*args):
        raise AssertionError("the Triton path ran")

    monkeypatch.setattr(kernels._NoiseAdaIN, "apply", boom)
    monkeypatch.setattr(kernels._BiasLReLU, "apply", boom)
    monkeypatch.setattr(kernels, "IMPL", "ref")  # the global switch sends "auto" to the reference
    assert torch.equal(kernels.noise_adain(x, noise, nw, bias, scale, shift),
                       kernels.noise_adain_ref(x, noise, nw, bias, scale, shift))
    assert torch.equal(kernels.bias_lrelu(x, bias), kernels.bias_lrelu_ref(x, bias))
    monkeypatch.setattr(kernels, "IMPL", "triton")
    with pytest.raises(AssertionError, match="Triton path ran"):
        kernels.bias_lrelu(x, bias)
    kernels.bias_lrelu(x, bias, impl="ref")  # an explicit argument beats the global switch
    monkeypatch.setattr(kernels, "IMPL", "fast")
    with pytest.raises(ValueError, match="STYLEGAN_IMPL"):
        kernels.bias_lrelu(x, bias)


def test_triton_unavailable(monkeypatch):
    x, bias = torch.randn(2, 3), torch.randn(3)  # a CPU tensor even when CUDA is present
    monkeypatch.setattr(kernels, "INTERPRET", False)
    assert torch.equal(kernels.bias_lrelu(x, bias), kernels.bias_lrelu_ref(x, bias))  # auto: reference
    with pytest.raises(RuntimeError, match="on cpu"):
        kernels.bias_lrelu(x, bias, impl="triton")
    monkeypatch.setattr(kernels, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="not installed"):
        kernels.bias_lrelu(x, bias, impl="triton")


def test_imports_without_triton():
    """No triton (macOS): kernels.py imports, "auto" runs the references, "triton" says why not."""
    code = ("import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
            "import torch, kernels\n"
            "x, b = torch.randn(2, 3, 4, 4), torch.randn(3)\n"
            "assert not kernels.HAS_TRITON and torch.equal(kernels.bias_lrelu(x, b), kernels.bias_lrelu_ref(x, b))\n"
            "try:\n    kernels.bias_lrelu(x, b, impl='triton')\n"
            "except RuntimeError as e:\n    print(e)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "not installed" in out.stdout, out.stderr[-2000:]


def test_bad_inputs():
    x, noise, nw, bias, scale, shift = adain_inputs((2, 3, 4, 4), "batch", False, torch.float32, seed=0)
    with pytest.raises(ValueError, match="x must be"):
        kernels.noise_adain(x[0], noise, nw, bias, scale, shift)
    with pytest.raises(ValueError, match="noise must be"):
        kernels.noise_adain(x, noise[:, :, :2], nw, bias, scale, shift)
    with pytest.raises(ValueError, match="scale must be"):
        kernels.noise_adain(x, noise, nw, bias, scale[:1], shift)
    with pytest.raises(ValueError, match="bias"):
        kernels.bias_lrelu(x, bias[:2])
    with pytest.raises(ValueError, match="gain > 0"):
        kernels.bias_lrelu(x, bias, gain=-1.0, impl="triton")
    with pytest.raises(ValueError, match="w_scale"):
        kernels.bias_lrelu_blur(x, bias, w_scale=0.0, impl="triton")
    with pytest.raises(ValueError, match="w_scale"):
        kernels.noise_adain(x, noise, nw, bias, scale, shift, w_scale=-1.0)
    for group, features in ((0, 1), (3, 1), (2, 4)):  # no group; 2 samples in groups of 3; 3 channels in 4
        with pytest.raises(ValueError, match="minibatch_stddev"):
            kernels.minibatch_stddev(x, group, features)


# ----------------------------------------------------------------------------------------------
# GPU compilation without a GPU: the interpreter accepts code that the compiler rejects
# (non-constexpr shapes, dtype mismatches), so compile the kernels for an H100 (sm_90) here.

COMPILE_CHECK = """
import itertools, triton, kernels as K
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
def build(fn, xdtype, consts, int_ty='i32'):
    sig = {}
    for a in fn.arg_names:
        if a in consts: sig[a] = 'constexpr'
        elif a in ('X', 'Y', 'DX', 'G', 'V', 'OUT'): sig[a] = '*' + xdtype
        elif a.isupper() and a not in ('N', 'C', 'HW', 'R', 'L', 'H', 'W', 'H2', 'W2'): sig[a] = '*fp32'
        elif a in ('slope', 'eps', 'gain', 'xs'): sig[a] = 'fp32'
        else: sig[a] = int_ty
    tile = 1
    for k, v in consts.items(): tile *= v if k.startswith('BLOCK') else 1
    triton.compile(ASTSource(fn, sig, consts), target=GPUTarget('cuda', 90, 32),
                   options=dict(num_warps=K._num_warps(tile)))
for xd, (bc, bhw), on in itertools.product(('fp32', 'bf16'), ((64, 16), (32, 128)), (False, True)):
    meta = dict(HAS_NOISE=True, BLUR=on, BLOCK_C=bc, BLOCK_HW=bhw)
    build(K._adain_fwd_kernel, xd, dict(meta, HAS_STATS=not on))  # blurred and whole planes, and vice versa
    build(K._adain_bwd_kernel, xd, dict(meta, HAS_SUMS=on))
    build((K._adain_stats_kernel, K._adain_bwd_sums_kernel)[on], xd, meta)
    build(K._adain_combine_stats_kernel, xd, dict(BLOCK_R=bc, BLOCK_K=bhw))
    build(K._sum_partials_kernel, xd, dict(HAS_Q=on, BLOCK_R=bc, BLOCK_K=bhw))
    build(K._bias_lrelu_fwd_kernel, xd, dict(BIAS_PER_ROW=on, BLOCK_R=bc, BLOCK_L=bhw))
    for sum_bias in (False, True):
        build(K._lrelu_grad_kernel, xd, dict(SUM_BIAS=sum_bias, BIAS_PER_ROW=on, BLOCK_R=bc, BLOCK_L=bhw))
    for (blur_first, forward), per_row in itertools.product(((False, True), (True, False), (False, False)),
                                                             (False, True)):
        build(K._lrelu_blur_kernel, xd, dict(BLUR_FIRST=blur_first, FORWARD=forward, SUM_BIAS=on and blur_first,
                                             PER_ROW=per_row, BLOCK_R=bc, BLOCK_L=bhw))
    for mode, per_row in itertools.product((0, 1, 2), (False, True)):
        build(K._lrelu_pool_kernel, xd, dict(MODE=mode, SUM_BIAS=on and mode == 2, PER_ROW=per_row, BLOCK_R=bc,
                                             BLOCK_L=bhw))
for xd in ('fp32', 'bf16', 'fp64'):
    for kernel in (K._mbstd_fwd_kernel, K._mbstd_bwd_kernel, K._mbstd_bwd_adjoint_kernel):
        build(kernel, xd, dict(FP64=xd == 'fp64', BLOCK_G=4, BLOCK_K=1024, BLOCK_HW=16))
build(K._adain_fwd_kernel, 'fp16', dict(HAS_NOISE=False, BLUR=False, HAS_STATS=False, BLOCK_C=1, BLOCK_HW=4096), 'i64')
build(K._adain_bwd_kernel, 'fp16', dict(HAS_NOISE=True, BLUR=True, HAS_SUMS=True, BLOCK_C=1, BLOCK_HW=4096), 'i64')
build(K._lrelu_grad_kernel, 'fp16', dict(SUM_BIAS=True, BIAS_PER_ROW=True, BLOCK_R=1, BLOCK_L=2048), 'i64')
print('compiled')
"""


@pytest.mark.slow
def test_kernels_compile_for_gpu():
    """Every kernel, over its constexpr branches and fp32/bf16/fp16, compiles to an sm_90 binary
    with this machine's triton (no GPU needed; about 40 s on 2 cores, less with a warm cache)."""
    try:
        from triton.backends import backends
    except ImportError:
        pytest.skip("this triton has no backend registry")
    if "nvidia" not in backends:
        pytest.skip("this triton build has no CUDA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # real JIT functions
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", COMPILE_CHECK], cwd=root, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "compiled" in out.stdout, out.stderr[-3000:]
