"""Tests for the paper's experiments: every configuration of Tables 1, 2 and 4 by name
(stylegan.PAPER_CONFIGS) against the official code's options and parameter counts, and perceptual
path length (metrics.py): LPIPS against the LPIPS package's formula, PPL against a hand computation.
No weights can be downloaded here, so LPIPS runs on random weights saved in the formats of
torchvision's VGG16 and the LPIPS package's vgg.pth."""
import dataclasses
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
import metrics
import stylegan as sg


@pytest.fixture(autouse=True)
def seed_and_reference_kernels(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(kernels, "IMPL", "ref")  # the Triton interpreter is far too slow for G forwards


# ----------------------------------------------------------------------------------------------
# Configurations: the official train.py's option lines for Tables 1, 2 and 4, copied as data here
# (G options, style_mixing_prob), and the official networks' trainable variables counted shape by
# shape as networks_stylegan.py creates them.

OFFICIAL_DEFAULTS = dict(use_styles=True, use_pixel_norm=False, use_instance_norm=True, mapping_layers=8,
                         truncation_psi=0.7, const_input_layer=True, use_noise=True)
TRADITIONAL = dict(use_styles=False, use_pixel_norm=True, use_instance_norm=False, mapping_layers=0,
                   truncation_psi=None, const_input_layer=False, use_noise=False)
OFFICIAL = {
    "table1-b": (TRADITIONAL, 0.0),
    "table1-c": (dict(const_input_layer=False, use_noise=False), 0.0),
    "table1-d": (dict(use_noise=False), 0.0),
    "table1-e": ({}, 0.0),
    "table1-f": ({}, 0.9),
    "table2-mix0": ({}, 0.0), "table2-mix50": ({}, 0.5),
    "table2-mix90": ({}, 0.9), "table2-mix100": ({}, 1.0),
    "table4-traditional-0": (TRADITIONAL, 0.0),
    "table4-traditional-8": (dict(TRADITIONAL, mapping_layers=8), 0.0),
    "table4-stylebased-0": (dict(mapping_layers=0), 0.9),
    "table4-stylebased-1": (dict(mapping_layers=1), 0.9),
    "table4-stylebased-2": (dict(mapping_layers=2), 0.9),
    "table4-stylebased-8": (dict(mapping_layers=8), 0.9),
}


def official_g_params(mapping_layers=8, use_styles=True, const_input_layer=True, use_noise=True, res_log2=10,
                      latent=512, dlatent=512, mapping_fmaps=512, num_channels=3, **_):
    """Trainable variables of the official G_mapping + G_synthesis (pixel and instance norm have none)."""
    nf = lambda stage: min(8192 // 2 ** stage, 512)  # noqa: E731
    dims = [latent] + [mapping_fmaps] * (mapping_layers - 1) + [dlatent]
    n = sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(mapping_layers))  # Dense%d weight, bias

    def epilogue(c):  # Noise/weight [C], bias [C], StyleMod: dense weight [dlatent, 2C] + bias [2C]
        return c * use_noise + c + (dlatent * 2 * c + 2 * c) * use_styles

    c = nf(1)
    n += c * 16 if const_input_layer else dlatent * c * 16  # 4x4/Const/const or 4x4/Dense/weight
    n += epilogue(c) + 9 * c * c + epilogue(c)  # 4x4/Conv/weight [3, 3, C, C]
    for res in range(3, res_log2 + 1):  # Conv0_up/weight [3, 3, Cin, C], Conv1/weight [3, 3, C, C]
        c = nf(res - 1)
        n += 9 * nf(res - 2) * c + epilogue(c) + 9 * c * c + epilogue(c)
    return n + sum(nf(res - 1) * num_channels + num_channels for res in range(2, res_log2 + 1))  # ToRGB_lod*


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_the_official_count_of_the_default_generator_is_the_readme_number():
    assert official_g_params() == 26_219_627


def test_every_paper_name_is_there():
    assert set(sg.PAPER_CONFIGS) == set(OFFICIAL)


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_paper_config_has_the_official_options_and_parameter_count(name):
    options, mixing = OFFICIAL[name]
    options = {**OFFICIAL_DEFAULTS, **options}
    entry = sg.PAPER_CONFIGS[name]
    cfg = sg.StyleGANConfig(**entry["cfg"])
    assert entry["mixing"] == mixing
    for field in ("use_styles", "use_pixel_norm", "use_instance_norm", "mapping_layers", "const_input_layer",
                  "use_noise"):
        assert getattr(cfg, field) == options[field], field
    assert (cfg.truncation_cutoff == 0) == (options["truncation_psi"] is None)
    with torch.device("meta"):  # shapes only: no 1024-scale memory
        G = sg.Generator(cfg)
    assert trainable(G) == official_g_params(**options)
    if name == "table1-f":
        assert trainable(G) == 26_219_627


def tiny_cfg(res=16, **kw):
    base = dict(resolution=res, fmap_base=128, fmap_max=16, z_dim=16, w_dim=16, mapping_fmaps=16)
    return sg.StyleGANConfig(**{**base, **kw})


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_paper_config_trains(name):
    """One G step with the configuration's mixing probability reaches every parameter in use."""
    G = sg.Generator(tiny_cfg(**sg.PAPER_CONFIGS[name]["cfg"])).train()
    img = G(torch.randn(4, 16), res=16, mixing=sg.PAPER_CONFIGS[name]["mixing"])
    assert img.shape == (4, 3, 16, 16) and torch.isfinite(img).all()
    img.square().mean().backward()
    unused = {f"synthesis.blocks.{i}.torgb" for i in range(2)}  # lower-resolution ToRGBs, alpha = 1
    for n, p in G.named_parameters():
        if not any(n.startswith(u) for u in unused):
            assert p.grad is not None, n


def test_traditional_generator_is_dense_input_and_pixel_norm():
    """Table 1 B: z -> pixel norm -> dense w -> 4x4 (gain sqrt(2)/4) -> + bias -> lrelu -> pixel norm;
    no styles, noise or truncation parameters or effects."""
    G = sg.Generator(tiny_cfg(**sg.PAPER_CONFIGS["table1-b"]["cfg"])).eval()
    names = [n for n, _ in G.named_parameters()]
    assert not any(".style." in n or "noise" in n or n.startswith("mapping.") for n in names)
    block = G.synthesis.blocks[0]
    with torch.no_grad():
        block.epi0.bias.normal_()
    seen = {}
    block.epi0.register_forward_hook(lambda m, args, out: seen.update(x=out))
    z = torch.randn(3, 16)
    with torch.no_grad():
        G.w_avg.normal_()  # truncation would now move w, if it applied
        img = G(z, psi=0.5)
        w = z / z.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()
        x = w @ (block.dense.weight * math.sqrt(2) / 4 / math.sqrt(16)).T
        x = F.leaky_relu(x.view(3, 16, 4, 4) + block.epi0.bias.view(1, -1, 1, 1), 0.2)
        x = x / x.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()
        torch.testing.assert_close(seen["x"], x, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(img, G(z, psi=1.0), rtol=0, atol=0)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="const_input_layer"):
        tiny_cfg(use_styles=False)
    G = sg.Generator(tiny_cfg(**sg.PAPER_CONFIGS["table4-traditional-8"]["cfg"]))
    with pytest.raises(ValueError, match="mixing needs styles"):
        G(torch.randn(2, 16), mixing=0.9)


def test_checkpoint_of_a_paper_config_rebuilds_it(tmp_path):
    cfg = tiny_cfg(**sg.PAPER_CONFIGS["table1-c"]["cfg"])
    G = sg.Generator(cfg).eval()
    path = str(tmp_path / "ckpt.pt")
    torch.save({"config": cfg.to_dict(), "G_ema": G.state_dict(), "res": 16, "alpha": 1.0}, path)
    G2, info = sg.load_generator(path)
    assert G2.cfg == cfg and hasattr(G2.synthesis.blocks[0], "dense")
    z = torch.randn(2, 16)
    torch.testing.assert_close(G2(z, noise_mode="const"), G(z, noise_mode="const"), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# LPIPS: the LPIPS package's LPIPS(net="vgg"), v0.1, written out here from its published source.

TV_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
SLICES = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]  # pretrained_networks.vgg16: relu1_2 .. relu5_3


def tv_vgg16_features():
    """torchvision's vgg16().features: 31 modules, convs at 0, 2, 5, 7, 10, ..."""
    layers, cin = [], 3
    for v in TV_VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


def lpips_reference(features, lins, in0, in1):
    """lpips.LPIPS.forward(in0, in1) with lpips=True, spatial=False, version 0.1."""
    shift = torch.tensor([-.030, -.088, -.188], dtype=in0.dtype)[None, :, None, None]
    scale = torch.tensor([.458, .448, .450], dtype=in0.dtype)[None, :, None, None]
    h0, h1, val = (in0 - shift) / scale, (in1 - shift) / scale, 0
    for (lo, hi), lin in zip(SLICES, lins):
        for i in range(lo, hi):
            h0, h1 = features[i](h0), features[i](h1)
        f0 = h0 / (torch.sqrt(torch.sum(h0 ** 2, dim=1, keepdim=True)) + 1e-10)  # normalize_tensor
        f1 = h1 / (torch.sqrt(torch.sum(h1 ** 2, dim=1, keepdim=True)) + 1e-10)
        val = val + F.conv2d((f0 - f1) ** 2, lin).mean([2, 3], keepdim=True)  # spatial_average
    return val  # [N, 1, 1, 1]


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """Random weights as torchvision's VGG16 state dict (with its classifier) and the LPIPS package's
    vgg.pth (lin<k>.model.1.weight: the Dropout is model.0), plus the reference's modules."""
    torch.manual_seed(1)
    features = tv_vgg16_features()
    for m in features:
        if isinstance(m, nn.Conv2d):  # He init keeps random-weight features O(1) through 13 convs
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.normal_(m.bias, std=0.1)
    lins = [torch.rand(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]  # LPIPS clamps its weights >= 0
    d = tmp_path_factory.mktemp("lpips")
    vgg = {f"features.{k}": v for k, v in features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(8, 8)
    torch.save(vgg, d / "vgg16.pth")
    torch.save({f"lin{k}.model.1.weight": w for k, w in enumerate(lins)}, d / "vgg.pth")
    return str(d / "vgg16.pth"), str(d / "vgg.pth"), features.eval(), lins


def test_lpips_matches_the_package_formula(lpips_files):
    vgg16, lin, features, lins = lpips_files
    L = metrics.load_lpips(vgg16, lin)
    a, b = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expect = lpips_reference(features.double(), [w.double() for w in lins], a.double(), b.double())
        d32 = L(a, b)
        d64 = L.double()(a.double(), b.double())
        features.float(), L.float()
    assert d32.shape == (3,) and d32.dtype == torch.float32
    # the same formula: in fp64 it agrees to the fp32 rounding of shift and scale (stored in fp32, as
    # the package's ScalingLayer stores them), and in fp32 to the bar of 1e-5
    torch.testing.assert_close(d64, expect.flatten(), rtol=1e-7, atol=0)
    torch.testing.assert_close(d32.double(), expect.flatten(), rtol=1e-5, atol=0)
    assert torch.all(L(a, a) == 0) and torch.allclose(L(b, a), d32, rtol=1e-6)


def test_lpips_files_errors_are_clear(lpips_files, tmp_path):
    vgg16, lin = lpips_files[:2]
    with pytest.raises(ValueError, match="no LPIPS linear weights"):
        metrics.load_lpips(vgg16)
    with pytest.raises(ValueError, match="not torchvision's VGG16"):
        metrics.load_lpips(lin, lin)
    pkl = tmp_path / "vgg16_zhang_perceptual.pkl"
    pkl.write_bytes(b"\x80\x04.")
    with pytest.raises(ValueError, match="not supported yet"):
        metrics.load_lpips(str(pkl))
    with pytest.raises(FileNotFoundError, match="--vgg16"):
        metrics.load_lpips(None)


# ----------------------------------------------------------------------------------------------
# Perceptual path length

def test_slerp_walks_the_great_circle():
    a, b = torch.randn(5, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)
    t = torch.rand(5, 1, dtype=torch.float64)
    s = metrics.slerp(a, b, t)
    ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    theta = torch.acos((ua * ub).sum(1, keepdim=True))  # Shoemake's form of the same curve:
    expect = (torch.sin((1 - t) * theta) * ua + torch.sin(t * theta) * ub) / torch.sin(theta)
    torch.testing.assert_close(s, expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(metrics.slerp(a, b, torch.ones(5, 1, dtype=torch.float64)), ub)


def test_percentile_filter_is_the_official_one():
    rng = np.random.default_rng(0)
    d = rng.permutation(np.concatenate([rng.random(197), [1e6, 2e6, -5.0]]))
    s = np.sort(d)  # 200 values: np.percentile 1 'lower' is s[1] (1.99 -> 1), 99 'higher' is s[198]
    assert metrics.ppl_mean(d) == pytest.approx(s[1:199].mean(), rel=1e-12)


def test_face_crop_and_downsampling():
    img = torch.randn(2, 3, 32, 32)
    assert torch.equal(metrics.ppl_crop(img, True), img[:, :, 12:28, 8:24])
    big = torch.randn(1, 3, 1024, 1024)
    torch.testing.assert_close(metrics.ppl_crop(big, True), F.avg_pool2d(big[:, :, 384:896, 256:768], 2))
    assert metrics.ppl_crop(big, False).shape == (1, 3, 256, 256)


@pytest.fixture(scope="module")
def tiny_g():
    torch.manual_seed(2)
    G = sg.Generator(tiny_cfg(32, mapping_layers=2)).eval().requires_grad_(False)
    for p in G.parameters():  # trained-like weights: noise strengths, biases and styles not zero
        p.data.add_(torch.randn_like(p) * 0.2)
    return G


def hand_distance(G, L, w_a, w_b, eps=1e-4):
    img = G.synthesis(torch.cat([w_a, w_b]), 32, 1.0, noise_mode="const")
    img = img[:, :, 12:28, 8:24]  # rows 3/8..7/8, columns 2/8..6/8 of 32
    return L(img[:len(w_a)], img[len(w_a):]) / eps ** 2


def test_path_distances_by_hand(tiny_g, lpips_files):
    G, L = tiny_g, metrics.load_lpips(*lpips_files[:2])
    z, t = torch.randn(6, 16), torch.rand(3)
    with torch.no_grad():
        w = G.map(z, track_w_avg=False)
        lerp = [w[0::2] + (w[1::2] - w[0::2]) * s for s in (t[:, None, None], t[:, None, None] + 1e-4)]
        torch.testing.assert_close(metrics.path_distances(G, L, z, t, "w", 32), hand_distance(G, L, *lerp),
                                   rtol=1e-5, atol=0)
        ua, ub = (v / v.norm(dim=1, keepdim=True) for v in (z[0::2].double(), z[1::2].double()))
        theta = torch.acos((ua * ub).sum(1, keepdim=True))
        sl = [(torch.sin((1 - s) * theta) * ua + torch.sin(s * theta) * ub) / torch.sin(theta)
              for s in (t[:, None].double(), t[:, None].double() + 1e-4)]
        ws = [G.map(s.float(), track_w_avg=False) for s in sl]
        d = metrics.path_distances(G, L, z, t, "z", 32)
    # float32 rounding of z (~1e-7) against a step of 1e-4: about 1e-3 of the distance
    torch.testing.assert_close(d, hand_distance(G, L, *ws), rtol=1e-2, atol=0)
    assert torch.all(d > 0)


def test_ppl_pipeline_by_hand(tiny_g, lpips_files):
    """5 samples in batches of 2, 2, 1: per batch the noise maps, then the latents, then t are drawn
    from one generator; every image of a batch shares the noise maps; the filter and the mean."""
    G, L = tiny_g, metrics.load_lpips(*lpips_files[:2])
    before = {k: v.clone() for k, v in G.state_dict().items()}
    got = metrics.ppl(G, L, "w", "full", num=5, res=32, pairs=2, seed=7)
    g, dists = torch.Generator().manual_seed(7), []
    maps = [b for n, b in G.named_buffers() if n.endswith("noise_const")]
    with torch.no_grad():
        for n in (2, 2, 1):
            for m in maps:
                m.copy_(torch.randn(m.shape, generator=g))
            z, t = torch.randn(2 * n, 16, generator=g), torch.rand(n, generator=g)[:, None, None]
            w = G.map(z, track_w_avg=False)
            dists.append(hand_distance(G, L, w[0::2] + (w[1::2] - w[0::2]) * t,
                                       w[0::2] + (w[1::2] - w[0::2]) * (t + 1e-4)))
    G.load_state_dict(before)
    d = np.sort(torch.cat(dists).double().numpy())
    assert got == pytest.approx(d.mean(), rel=1e-5)  # with 5 samples the filter keeps them all
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())  # noise maps restored
    with pytest.raises(ValueError, match="16x16"):
        metrics.ppl(G, L, "w", "end", num=2, res=16)


def test_ppl_from_the_command_line(tiny_g, lpips_files, tmp_path, capsys):
    ckpt = str(tmp_path / "ckpt.pt")
    torch.save({"config": dataclasses.asdict(tiny_g.cfg), "G_ema": tiny_g.state_dict()}, ckpt)
    out = metrics.main(["--ckpt", ckpt, "--metrics", "ppl_wend,ppl_zfull", "--num", "4", "--batch", "4",
                        "--vgg16", lpips_files[0], "--lpips", lpips_files[1], "--device", "cpu", "--quiet"])
    assert set(out) >= {"ppl_wend", "ppl_zfull", "ppl_num", "seconds"} and out["ppl_num"] == 4
    assert out["data"] is None and out["ppl_wend"] > 0 and out["ppl_zfull"] > 0
    assert '"ppl_wend"' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="PPL measures a generator"):
        metrics.main(["a", "b", "--metrics", "ppl_wend"])


def _ppl_worker(rank, world, init_file, files, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)
    torch.set_num_threads(1)
    kernels.IMPL = "ref"
    torch.manual_seed(2)
    G = sg.Generator(tiny_cfg(32, mapping_layers=2)).eval().requires_grad_(False)
    out = metrics.evaluate(G, None, ("ppl_wfull",), num=4, batch=4, rank=rank, world_size=world,
                           lpips=files, verbose=False)
    torch.save(out, os.path.join(out_dir, f"{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ppl_shares_samples_over_processes(lpips_files, tmp_path):
    """Two processes draw 2 samples each (seeds 0 and 1); rank 0 reports the mean of all 4, which
    here (4 samples: the filter keeps them all) is the mean of two one-process runs of 2 samples."""
    files = lpips_files[:2]
    torch.multiprocessing.spawn(_ppl_worker, args=(2, str(tmp_path / "init"), files, str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    torch.manual_seed(2)
    G = sg.Generator(tiny_cfg(32, mapping_layers=2)).eval().requires_grad_(False)
    L = metrics.load_lpips(*files)
    one = [metrics.ppl(G, L, "w", "full", num=2, res=32, pairs=2, seed=s) for s in (0, 1)]
    assert r1 == {} and r0["ppl_num"] == 4
    assert r0["ppl_wfull"] == pytest.approx(sum(one) / 2, rel=1e-5)
