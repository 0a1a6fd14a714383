"""Tests for stylegan.py: the official parameter count, shapes at every resolution, progressive
blending, truncation, noise modes, style mixing, gradients, autocast and input checks, and the
training step's hand-written gradients (kernels.py) against plain autograd in fp64."""
import math

import pytest
import torch
import torch.nn.functional as F

import kernels
import stylegan as sg
import train


def tiny_cfg(res=32, **kw):
    """The official architecture with few channels, so CPU forwards are fast."""
    base = dict(resolution=res, fmap_base=128, fmap_max=32, z_dim=32, w_dim=32, mapping_fmaps=32)
    return sg.StyleGANConfig(**{**base, **kw})


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.fixture(autouse=True)
def seed_and_reference_kernels(monkeypatch):
    """Model tests run the PyTorch references (the Triton interpreter is far too slow for them);
    the Triton path is held equal to them by test_triton_and_reference_give_the_same_model."""
    torch.manual_seed(0)
    monkeypatch.setattr(kernels, "IMPL", "ref")


# ----------------------------------------------------------------------------------------------
# Faithfulness to the official model

def test_official_parameter_count_1024():
    with torch.device("meta"):  # shapes only: no 1024-scale memory
        G = sg.Generator(sg.StyleGANConfig())
        D = sg.Discriminator(sg.StyleGANConfig())
    assert trainable(G) == 26_219_627  # the official README's count for Gs
    assert trainable(D) == 23_087_249  # and for D
    assert G.cfg.num_ws == 18


@pytest.mark.parametrize("group", [0, 1])
def test_minibatch_stddev_off_is_the_official_layer_off(group):
    """The official D_basic skips minibatch stddev for mbstd_group_size <= 1: its 4x4 conv then reads
    nf(1) = 512 channels, not 513, so it has 9 * 512 fewer weights than the default D."""
    with torch.device("meta"):
        D = sg.Discriminator(sg.StyleGANConfig(mbstd_group_size=group))
    assert trainable(D) == 23_087_249 - 9 * 512
    D = sg.Discriminator(tiny_cfg(16, mbstd_group_size=group))
    assert D.conv.weight.shape[1] == D.cfg.nf(1)
    x = torch.randn(3, 3, 16, 16)  # no group divides 3 but 1 and 3: nothing to shrink when off
    torch.testing.assert_close(D(x)[1], D(x[1:2])[0], rtol=1e-5, atol=1e-6)  # each image alone


def test_channel_counts_follow_nf():
    cfg = sg.StyleGANConfig()
    expected = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    with torch.device("meta"):
        G = sg.Generator(cfg)
    for block in G.synthesis.blocks:
        assert block.conv1.weight.shape[0] == expected[block.res]
        assert hasattr(block, "conv0") == (block.res > 4)
        if block.res > 4:  # nearest-upsample conv below 128, fused transposed conv from 128 up
            assert block.conv0.fused == (block.res >= 128)
    assert G.synthesis.blocks[0].const.shape == (1, 512, 4, 4)


def test_init_matches_official():
    G = sg.Generator(tiny_cfg())
    assert torch.all(G.synthesis.blocks[0].const == 1)
    epi = G.synthesis.blocks[1].epi0
    assert torch.all(epi.noise_weight == 0) and torch.all(epi.bias == 0)
    m = G.mapping.layers[0]  # stored N(0, 1/lrmul), run-time scale sqrt(2)/sqrt(fan_in)*lrmul
    assert abs(m.weight.std().item() - 100.0) < 5.0
    assert math.isclose(m.w_scale, math.sqrt(2) / math.sqrt(32) * 0.01)
    assert math.isclose(epi.style.w_scale, 1.0 / math.sqrt(32))  # style affine: gain 1


def test_full_size_forward_1024():
    cfg = sg.StyleGANConfig()
    G, D = sg.Generator(cfg).eval(), sg.Discriminator(cfg)
    with torch.no_grad():
        img = G(torch.randn(1, 512), res=1024)
        assert img.shape == (1, 3, 1024, 1024) and torch.isfinite(img).all()
        assert D(img).shape == (1, 1)


@pytest.mark.parametrize("res", [4, 8, 16, 32, 64, 128, 256, 512, 1024])
def test_shapes_every_resolution(res):
    cfg = tiny_cfg(1024, fmap_base=2048, fmap_max=8)  # 4 channels at 1024
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    with torch.no_grad():
        img = G(torch.randn(2, 32), res=res, alpha=0.5)
        assert img.shape == (2, 3, res, res)
        assert D(img, alpha=0.5).shape == (2, 1)


def test_fused_up_conv_is_nearest_upsample_conv():
    """The official fused transposed conv (4x4 kernel summed from the 3x3 one) equals nearest
    upsampling followed by the 3x3 conv with the kernel flipped (transposed convs correlate with
    the flipped kernel); the fused downsampling conv (x0.25) equals conv then 2x2 average."""
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    up = sg.EqualConv2d(5, 4, 3, up=True, fused=True).double()
    ref = sg.EqualConv2d(5, 4, 3, up=True, fused=False).double()
    ref.weight.data = up.weight.data.flip(2, 3)
    torch.testing.assert_close(up.conv(x), ref.conv(x), rtol=1e-12, atol=1e-12)
    down = sg.EqualConv2d(5, 4, 3, down=True, fused=True).double()
    ref = sg.EqualConv2d(5, 4, 3, down=True, fused=False).double()
    ref.weight.data = down.weight.data.clone()
    x = torch.randn(2, 5, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(down.conv(x), ref.conv(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scales_in_weights", [False, True])
def test_fused_resampling_is_the_same_network(scales_in_weights):
    """fuse_resampling (train.on_device fuses from 16x16 on a CPU) changes how G and D compute, not
    what: in fp64, with every resampling conv fused and with none, the images, D's logits while a
    resolution fades in, R1's gradient and every parameter gradient through R1's double backward
    agree to 1e-10; and so they do with the equalized-lr scales multiplied into the weights
    (scale_in_epilogues off, as on a CPU) instead of applied by the epilogues."""
    cfg = tiny_cfg(32)
    G, D = sg.Generator(cfg).double(), sg.Discriminator(cfg).double()
    for p in [*G.parameters(), *D.parameters()]:
        p.data.normal_()  # biases and noise weights too, so no gradient is trivially zero
    z, reals = torch.randn(4, 32, dtype=torch.float64), torch.randn(4, 3, 32, 32, dtype=torch.float64)
    results = []
    for from_res in (8, 1024):
        sg.fuse_resampling(G, from_res), sg.fuse_resampling(D, from_res)
        assert all(b.conv1.fused == (from_res == 8) for b in D.blocks)
        if from_res == 8 and scales_in_weights:  # the other form of both at once
            sg.scale_in_epilogues(G, False), sg.scale_in_epilogues(D, False)
            assert not any(b.conv1.scale_after for b in D.blocks)
        G.zero_grad(), D.zero_grad()
        img = G(z, res=32, alpha=0.7, noise_mode="const")
        x = reals.clone().requires_grad_(True)
        r1, = torch.autograd.grad(D(x, alpha=0.7).sum(), x, create_graph=True)
        (D(img, alpha=0.7).mean() + r1.square().sum()).backward()
        results.append([img.detach(), r1.detach()] + [p.grad for p in [*G.parameters(), *D.parameters()]])
    names = ["img", "r1"] + [n for n, _ in [*G.named_parameters(), *D.named_parameters()]]
    for name, a, b in zip(names, *results):
        if b is None:  # FromRGB / ToRGB of resolutions not in use
            assert a is None, name
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * b.abs().max().item(),
                                   msg=lambda m: f"{name}: {m}")


def test_minibatch_stddev_matches_direct_formula():
    x = torch.randn(8, 6, 4, 4)
    y = sg.minibatch_stddev(x, group_size=4)
    assert y.shape == (8, 7, 4, 4) and torch.equal(y[:, :6], x)
    # official grouping: sample i belongs to group i % (N / G)
    for m in range(2):
        group = x[m::2]
        expected = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[m::2, 6], expected.expand(4, 4, 4), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Progressive growing

def test_alpha_zero_is_upsampled_lower_resolution():
    G = sg.Generator(tiny_cfg()).eval()
    z = torch.randn(3, 32)
    with torch.no_grad():
        for res in [8, 16, 32]:
            low = G(z, res=res // 2, noise_mode="const")
            faded = G(z, res=res, alpha=0.0, noise_mode="const")
            torch.testing.assert_close(faded, F.interpolate(low, scale_factor=2), rtol=0, atol=1e-6)


def test_alpha_one_uses_only_new_torgb():
    G = sg.Generator(tiny_cfg()).eval()
    z = torch.randn(3, 32)
    with torch.no_grad():
        before = G(z, res=16, alpha=1.0, noise_mode="const")
        G.synthesis.blocks[1].torgb.weight.add_(1.0)  # the 8x8 ToRGB
        assert torch.equal(G(z, res=16, alpha=1.0, noise_mode="const"), before)
        assert not torch.allclose(G(z, res=16, alpha=0.5, noise_mode="const"), before)


def test_discriminator_fade():
    D = sg.Discriminator(tiny_cfg())
    img = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(D(img, alpha=0.0), D(F.avg_pool2d(img, 2)), rtol=0, atol=1e-6)
        D.fromrgb[1].weight.add_(1.0)  # the 8x8 FromRGB only matters while fading
        a = D(img, alpha=1.0)
        D.fromrgb[1].weight.sub_(2.0)
        assert torch.equal(D(img, alpha=1.0), a)


# ----------------------------------------------------------------------------------------------
# Truncation, noise, style mixing

def test_truncation():
    G = sg.Generator(tiny_cfg()).eval()
    G.w_avg.normal_()
    z = torch.randn(4, 32)
    with torch.no_grad():
        img0 = G(z, res=32, psi=0.0, noise_mode="const")  # 32x32 uses 8 layers: all truncated
        assert torch.allclose(img0, img0[:1].expand_as(img0), atol=1e-6)
        assert torch.equal(G(z, psi=1.0, noise_mode="const"), G(z, noise_mode="const"))
        ws, ws0 = G.map(z), G.map(z, psi=0.0)
        assert torch.allclose(ws0[:, :8], G.w_avg.expand(4, 8, -1))
        assert torch.equal(ws0[:, 8:], ws[:, 8:])  # past the cutoff: untouched
        half = G.map(z, psi=0.5)
        torch.testing.assert_close(half[:, :8], G.w_avg + 0.5 * (ws[:, :8] - G.w_avg))


def test_w_avg_tracks_ema_in_training_only():
    G = sg.Generator(tiny_cfg())
    z = torch.randn(8, 32)
    G.eval()
    G(z, res=8)
    assert torch.all(G.w_avg == 0)
    G.train()
    G(z, res=8, mixing=1.0)  # the mixing latent must not move w_avg (official G_style)
    with torch.no_grad():
        w = G.mapping(z).mean(0)
    torch.testing.assert_close(G.w_avg, (1 - 0.995) * w, rtol=1e-5, atol=1e-7)


def record_noise(monkeypatch):
    seen = []
    real = kernels.noise_adain

    def spy(x, noise, *args, **kw):
        seen.append(None if noise is None else noise.detach().clone())
        return real(x, noise, *args, **kw)
    monkeypatch.setattr(kernels, "noise_adain", spy)
    return seen


def test_noise_modes(monkeypatch):
    G = sg.Generator(tiny_cfg()).eval()
    for epi in G.modules():
        if isinstance(epi, sg.LayerEpilogue):
            epi.noise_weight.data.fill_(0.5)  # make the noise visible in the output
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(G(z, noise_mode="const"), G(z, noise_mode="const"))
        assert not torch.allclose(G(z, noise_mode="random"), G(z, noise_mode="random"))
        assert torch.equal(G(z, noise_mode="none"), G(z, noise_mode="none"))
        seen = record_noise(monkeypatch)
        G(z, noise_mode="random")
    assert len(seen) == G.cfg.num_ws
    a, b = seen[-2], seen[-1]  # the two layers of the 32x32 block: fresh map each
    assert a.shape == (2, 1, 32, 32)
    corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
    assert abs(corr) < 0.15
    assert not torch.allclose(a[0], a[1])  # and per sample
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="fixed")


def test_noise_ablation_has_no_noise_parameters():
    G = sg.Generator(tiny_cfg(use_noise=False))
    assert not any("noise" in name for name, _ in G.named_parameters())
    assert G(torch.randn(2, 32), res=8).shape == (2, 3, 8, 8)


def test_mapping_depth_zero_uses_normalized_z():
    G = sg.Generator(tiny_cfg(mapping_layers=0)).eval()
    z = torch.randn(2, 32)
    torch.testing.assert_close(G.map(z)[:, 0], sg.pixel_norm(z))


def test_style_mixing_crossover():
    G = sg.Generator(tiny_cfg()).eval()
    z = torch.randn(2, 32)
    ws1, ws2 = G.map(z), G.map(torch.randn(2, 32))
    mixed = sg.mix_styles(ws1, ws2, 3)
    assert torch.equal(mixed[:, :3], ws1[:, :3]) and torch.equal(mixed[:, 3:], ws2[:, 3:])

    captured = []
    real = G.synthesis.forward
    G.synthesis.forward = lambda ws, *a, **k: (captured.append(ws), real(ws, *a, **k))[1]
    cutoffs = set()
    for _ in range(60):
        G(z, res=16, mixing=1.0)
        ws = captured.pop()
        differs = [not torch.allclose(ws[:, i], ws1[:, i]) for i in range(G.cfg.num_ws)]
        k = differs.index(True)
        assert all(differs[k:]), "after the crossover every layer comes from the second latent"
        assert torch.allclose(ws[:, k:], ws[:, k:k + 1].expand_as(ws[:, k:]))
        cutoffs.add(k)
    assert cutoffs == {1, 2, 3, 4, 5}  # uniform in [1, layers in use = 6)
    G(z, res=16, mixing=0.0)
    assert torch.equal(captured.pop(), ws1)


# ----------------------------------------------------------------------------------------------
# Gradients, autocast, bad input

def test_gradients_reach_every_parameter():
    cfg = tiny_cfg(16)
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    loss = 0
    for res in [4, 8, 16]:  # every ToRGB / FromRGB is in use at some resolution
        img = G(torch.randn(4, 32), res=res, alpha=0.5, mixing=0.5)
        loss = loss + D(img, alpha=0.5).square().mean()
    loss.backward()
    for name, p in [*G.named_parameters(), *D.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_autocast_bf16():
    cfg = tiny_cfg(32)
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = G(torch.randn(4, 32), res=32, alpha=0.7, mixing=0.9)
        logits = D(img, alpha=0.7)
    assert img.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    logits.float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in G.parameters() if p.grad is not None)


def test_bad_input_errors():
    cfg = tiny_cfg(32)
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    with pytest.raises(ValueError, match=r"z must have shape \[N, 32\]"):
        G(torch.randn(2, 31))
    for res in [3, 12, 64, 2]:
        with pytest.raises(ValueError, match="power of two between 4 and 32"):
            G(torch.randn(2, 32), res=res)
    with pytest.raises(ValueError, match="power of two between 4 and 32"):
        D(torch.randn(2, 3, 24, 24))
    with pytest.raises(ValueError, match=r"D expects images \[N, 3, res, res\]"):
        D(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="power of two"):
        sg.StyleGANConfig(resolution=100)


def test_config_round_trip_rebuilds_model():
    cfg = tiny_cfg(16, mapping_layers=2, use_noise=False)
    G = sg.Generator(cfg)
    G2 = sg.Generator(sg.StyleGANConfig(**cfg.to_dict()))
    G2.load_state_dict(G.state_dict())
    z = torch.randn(2, 32)
    assert torch.equal(G.eval()(z), G2.eval()(z))


def test_batched_mixing_latents_are_separate_mapping_passes():
    """Style mixing maps both latents in one pass of the mapping network: the same draws, the same
    styles and image (fp64, to rounding) as mapping them one by one and mixing (mix_styles)."""
    G = sg.Generator(tiny_cfg(16)).double().eval()
    z = torch.randn(3, 32, dtype=torch.float64)
    torch.manual_seed(7)
    img = G(z, res=16, mixing=1.0, noise_mode="const")
    torch.manual_seed(7)
    z2 = torch.randn_like(z)  # the second latent, then the mixing draws
    assert torch.rand(()) < 1.0
    cutoff = int(torch.randint(1, 6, ()))
    ws = sg.mix_styles(G.map(z), G.map(z2), cutoff)
    torch.testing.assert_close(img, G.synthesis(ws, 16, noise_mode="const"), rtol=1e-12, atol=1e-12)



def per_layer_styles(synthesis, ws, n):
    """The official formulation of SynthesisNetwork.styles: each layer's own dense layer (StyleMod)
    of its own latent, one matmul per layer."""
    styles = []
    for i, epi in enumerate(synthesis.epilogues(n)):
        ys, yb = epi.style(ws[:, i]).chunk(2, dim=1)
        styles.append((ys + 1, yb))
    return styles


def styled_generator(res=64):
    """fp64, channels that halve with each resolution (32 down to 2: five batched matmuls of styles),
    biases and the constant input off their init, so that every style and gradient carries signal."""
    G = sg.Generator(tiny_cfg(res, fmap_base=64)).double()
    for p in G.parameters():
        if p.ndim == 1:
            p.data.normal_(0, 0.3)
    G.synthesis.blocks[0].const.data.normal_()
    return G


def test_batched_styles_are_the_per_layer_styles(monkeypatch):
    """The styles of all layers come from one batched matmul per channel width: the per-layer
    styles, and the image and every gradient (ws included) of the per-layer formulation, in fp64 to
    1e-12 of each tensor's largest value, for latents that differ in every layer; each style is a
    contiguous [N, C] (kernels.noise_adain would copy any other)."""
    G = styled_generator()
    assert len({epi.style.weight.shape[0] for epi in G.synthesis.epilogues(5)}) == 5
    ws = torch.randn(3, G.cfg.num_ws, 32, dtype=torch.float64)
    for n in (5, 3, 1):
        got = G.synthesis.styles(ws, n)
        for (scale, shift), (ys1, yb) in zip(got, per_layer_styles(G.synthesis, ws, n), strict=True):
            assert scale.is_contiguous() and shift.is_contiguous()
            torch.testing.assert_close(scale, ys1, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(shift, yb, rtol=1e-12, atol=1e-12)
    results = []
    for styles in (G.synthesis.styles, lambda ws, n: per_layer_styles(G.synthesis, ws, n)):
        monkeypatch.setattr(G.synthesis, "styles", styles)
        G.zero_grad()
        x = ws.clone().requires_grad_(True)
        img = G.synthesis(x, 64, alpha=0.7, noise_mode="const")
        (img * torch.linspace(-1, 1, img.numel(), dtype=img.dtype).view_as(img)).sum().backward()
        grads = [(name, p.grad) for name, p in G.named_parameters()]
        results.append([("image", img.detach()), ("ws", x.grad)] + grads)
    for (name, a), (_, b) in zip(*results):
        assert (a is None) == (b is None), name
        if b is not None:
            err = ((a - b).abs().max() / b.abs().max()).item()
            assert err <= 1e-12, f"{name}: relative error {err:.1e}"


def test_weights_scaled_at_once_are_the_per_layer_products(monkeypatch):
    """G and D make all the weights they use in one foreach multiply (scale_weights): the images,
    logits and gradients are bitwise those of making each layer's weight on its own (run_weight, fp32)."""
    cfg = tiny_cfg(128, fmap_base=256, fmap_max=8)  # 128x128: the fused up/down kernels take part
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    z = torch.randn(2, 32)
    results = []
    for scale in (sg.scale_weights, lambda layers: {layer: sg.run_weight(layer) for layer in layers}):
        monkeypatch.setattr(sg, "scale_weights", scale)
        G.zero_grad(), D.zero_grad()
        img = G(z, alpha=0.5, noise_mode="const")
        logits = D(img, alpha=0.5)
        logits.sum().backward()
        grads = [p.grad for p in [*G.parameters(), *D.parameters()] if p.grad is not None]
        results.append([img, logits] + grads)
    assert len(results[0]) == len(results[1]) and all(map(torch.equal, *results))

LEAN_OPS = {name: getattr(kernels, name) for name in ("blur2d", "conv2d", "bias_lrelu", "bias_lrelu_blur",
                                                       "bias_lrelu_pool")}
LEAN_BIAS_BACKWARD = kernels._BiasLReLU.backward


def plain_bias_backward(ctx, dy):
    """_BiasLReLU's backward without the cut: dx from the gradient kernel, the bias gradient a torch
    sum of dx, whenever the bias requires one."""
    y, = ctx.saved_tensors
    dx = kernels._LReLUGrad.apply(dy, y, ctx.slope, ctx.gain, ctx.xs)
    du = kernels._LReLUGrad.apply(dy, y, ctx.slope, ctx.gain, 1.0)  # the gradient of u = xs * x + b
    return dx, du.sum([0, *range(2, du.ndim)]).to(ctx.bias_dtype), None, None, None


def lean_step_grads(G, D, z, reals, cuts, triton, monkeypatch):
    """train.py's D loss (logistic + R1) and G loss with kernels.py's hand-written gradients `cuts`
    on and the plain formulation for the rest (impl="ref" for blur2d and conv2d; for bias_lrelu,
    which is Triton if `triton`, plain_bias_backward): penalty, dD/dx and every gradient."""
    for name, real in LEAN_OPS.items():
        impl = "triton" if name in cuts or (name == "bias_lrelu" and triton) else "ref"
        if name == "bias_lrelu_blur" and name not in cuts:  # the plain lrelu (exact in fp64), then blur2d
            real = lambda x, b, impl, **k: kernels.blur2d(kernels.bias_lrelu_ref(x, b, **k))  # noqa: E731
        if name == "bias_lrelu_pool" and name not in cuts:  # the 2x2 average, then the plain lrelu
            real = lambda x, b, impl, **k: kernels.bias_lrelu_ref(F.avg_pool2d(x, 2), b, **k)  # noqa: E731
        monkeypatch.setattr(kernels, name, lambda *a, real=real, impl=impl, **k: real(*a, **{**k, "impl": impl}))
    bias_backward = LEAN_BIAS_BACKWARD if "bias_lrelu" in cuts else plain_bias_backward
    monkeypatch.setattr(kernels._BiasLReLU, "backward", staticmethod(bias_backward))
    G.zero_grad(), D.zero_grad()
    x = reals.clone().requires_grad_(True)
    real_logits, fake_logits = D(x), D(G(z, noise_mode="const").detach())
    grad, = torch.autograd.grad(real_logits.sum(), x, create_graph=True)
    penalty = grad.square().sum((1, 2, 3))
    loss_D = (F.softplus(fake_logits) + F.softplus(-real_logits) + 5 * penalty[:, None]).mean()
    loss_G = F.softplus(-D(G(z, noise_mode="const"))).mean()
    (loss_D + loss_G).backward()
    return [penalty.detach(), grad.detach()] + [p.grad for p in [*G.parameters(), *D.parameters()]]


@pytest.mark.parametrize("cuts", [(name,) for name in LEAN_OPS if name not in ("bias_lrelu_blur", "bias_lrelu_pool")]
                         + [tuple(LEAN_OPS)])
def test_lean_step_is_the_same_math(cuts, monkeypatch):
    """The training step's hand-written gradients (kernels.blur2d: the blur is its own adjoint;
    conv2d: no autograd convolution double backward; bias_lrelu: the bias gradient summed in the
    Triton kernel and skipped in R1's first pass; bias_lrelu_blur: D's lrelu and blur in one kernel
    whose gradients are each other's adjoints; bias_lrelu_pool: D's 2x2 average, bias and lrelu below
    128x128 in one kernel, likewise) give the R1 penalty, dD/dx and every G and D
    gradient of the plain formulation, in fp64 to 1e-12 of each tensor's largest value (measured:
    1e-13 and below). 128x128: the fused up/down convolutions take part."""
    triton = "bias_lrelu" in cuts
    if (triton or "bias_lrelu_blur" in cuts or "bias_lrelu_pool" in cuts) and not (torch.cuda.is_available()
                                                                                   or kernels.INTERPRET):
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = tiny_cfg(128, fmap_base=256, fmap_max=4, z_dim=8, w_dim=8, mapping_fmaps=8, mapping_layers=2)
    G, D = sg.Generator(cfg).to(device).double(), sg.Discriminator(cfg).to(device).double()
    for p in [*G.parameters(), *D.parameters()]:
        if p.ndim == 1:  # biases and noise weights off zero: every path carries signal
            p.data.normal_(0, 0.3)
    z = torch.randn(2, 8, device=device, dtype=torch.float64)
    reals = torch.randn(2, 3, 128, 128, device=device, dtype=torch.float64)
    want = lean_step_grads(G, D, z, reals, (), triton, monkeypatch)
    got = lean_step_grads(G, D, z, reals, cuts, triton, monkeypatch)
    names = ["penalty", "dD/dx"] + [n for n, _ in [*G.named_parameters(), *D.named_parameters()]]
    for name, a, b in zip(names, got, want):
        assert (a is None) == (b is None), name
        if b is not None:
            err = ((a - b).abs().max() / b.abs().max()).item()
            assert err <= 1e-12, f"{name}: relative error {err:.1e}"


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_triton_and_reference_give_the_same_model(layout, monkeypatch, no_tf32):
    """Images, D logits, the R1 gradient and every parameter gradient agree between the fused
    Triton kernels and the PyTorch references in NCHW (fp32; on CPU via TRITON_INTERPRET=1), with
    the Triton side in either layout (train.py --memory-format) and in a GPU's form: the equalized-lr
    scales applied by the kernels (on a CPU on_device puts them into the weights), D's average, bias
    and leaky ReLU in kernels.bias_lrelu_pool."""
    if not (torch.cuda.is_available() or kernels.INTERPRET):
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setattr(kernels, "SPLIT_HW", 32)  # 8x8 and 16x16 planes take the split path too
    cfg = tiny_cfg(16, fmap_base=32, fmap_max=8, z_dim=8, w_dim=8, mapping_fmaps=8, mapping_layers=2)
    G, D = sg.Generator(cfg).to(device), sg.Discriminator(cfg).to(device)
    for epi in G.modules():
        if isinstance(epi, sg.LayerEpilogue):
            epi.noise_weight.data.normal_()
            epi.bias.data.normal_(0, 0.1)
    z, reals = torch.randn(2, 8, device=device), torch.randn(2, 3, 16, 16, device=device)
    results = {}
    for impl in ("ref", "triton"):
        monkeypatch.setattr(kernels, "IMPL", impl)
        if impl == "triton":
            G, D = (sg.scale_in_epilogues(train.on_device(net, device, layout)) for net in (G, D))
            reals = train.on_device(reals, device, layout)
        G.zero_grad(), D.zero_grad()
        img = G(z, res=16, alpha=0.6, noise_mode="const")
        x = reals.clone().requires_grad_(True)
        r1, = torch.autograd.grad(D(x, alpha=0.6).sum(), x, create_graph=True)
        loss = D(img, alpha=0.6).mean() + r1.square().sum()
        loss.backward()
        grads = [p.grad for p in [*G.parameters(), *D.parameters()]]  # None: unused at 16x16
        results[impl] = (img.detach(), r1.detach(), grads)
    (img_r, r1_r, g_r), (img_t, r1_t, g_t) = results["ref"], results["triton"]
    torch.testing.assert_close(img_t, img_r, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r1_t, r1_r, rtol=1e-4, atol=1e-6)
    names = [n for n, _ in [*G.named_parameters(), *D.named_parameters()]]
    assert sum(g is not None for g in g_r) == len(names) - 4  # all but ToRGB/FromRGB of 4x4
    for name, a, b in zip(names, g_t, g_r):
        if b is None:
            assert a is None, name
            continue
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * (b.abs().max().item() + 1e-6),
                                   msg=lambda m: f"{name}: {m}")
