"""Tests for NVIDIA's pretrained-network pickles (stylegan.load_official, stylegan.save_official),
without a download: a fixture writes a file in the official format for a small config, with the
official class path, variable names and shapes (networks_stylegan.py), random values. Checked: every
variable fills exactly one tensor, the loaded networks equal the official formulas computed here in
numpy, both directions round-trip exactly, the entry points take the file, and files that would run
code, or are truncated or foreign, are refused with nothing run."""
import collections
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

import kernels
import sample
import stylegan as sg
import train

RES, FMAP_BASE, FMAP_MAX = 32, 64, 32            # channels 32, 32, 16, 8, 4 at stages 0..4
Z_DIM, W_DIM, MAPPING_FMAPS, MAPPING_LAYERS = 12, 16, 20, 3
L = int(math.log2(RES))
NUM_LAYERS = 2 * L - 2
KWARGS = dict(num_channels=3, resolution=RES, label_size=0, fmap_base=FMAP_BASE, fmap_max=FMAP_MAX,
              latent_size=Z_DIM, dlatent_size=W_DIM, mapping_layers=MAPPING_LAYERS, mapping_fmaps=MAPPING_FMAPS)


def nf(stage):
    return min(FMAP_BASE // 2 ** stage, FMAP_MAX)


@pytest.fixture(autouse=True)
def reference_kernels(monkeypatch):
    monkeypatch.setattr(kernels, "IMPL", "ref")  # the Triton interpreter is too slow for whole networks


# ----------------------------------------------------------------------------------------------
# An official file, written here the way NVIDIA's code writes one

@pytest.fixture
def network_class(monkeypatch):
    """dnnlib.tflib.network.Network as pickle sees it: a class of that module path whose state is
    the dict the official __getstate__ returns. It exists for the test only."""
    class Network:
        def __init__(self, **state):
            self.state = state

        def __getstate__(self):
            return self.state

        def __setstate__(self, state):
            self.state = state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["dnnlib.tflib.network"].Network = Network
    return Network


def generator_variables(rng):
    """(G_style's own, G_mapping's, G_synthesis's) variables in networks_stylegan.py's names, order
    and shapes: conv kernels [kh, kw, in, out], dense weights [in, out], lod 0-d."""
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    dims = [Z_DIM] + [MAPPING_FMAPS] * (MAPPING_LAYERS - 1) + [W_DIM]
    mapping = [v for i in range(MAPPING_LAYERS)
               for v in ((f"Dense{i}/weight", r(dims[i], dims[i + 1])), (f"Dense{i}/bias", r(dims[i + 1])))]
    syn = [("lod", np.float32(0))] + [(f"noise{i}", r(1, 1, 2 ** (i // 2 + 2), 2 ** (i // 2 + 2)))
                                      for i in range(NUM_LAYERS)]
    for res in range(2, L + 1):
        C, s = nf(res - 1), f"{2 ** res}x{2 ** res}"
        if res == 2:
            layers = [("4x4/Const", "const", r(1, C, 4, 4)), ("4x4/Conv", "weight", r(3, 3, C, C))]
        else:
            layers = [(f"{s}/Conv0_up", "weight", r(3, 3, nf(res - 2), C)),
                      (f"{s}/Conv1", "weight", r(3, 3, C, C))]
        for scope, first, value in layers:
            syn += [(f"{scope}/{first}", value), (f"{scope}/Noise/weight", r(C)), (f"{scope}/bias", r(C)),
                    (f"{scope}/StyleMod/weight", r(W_DIM, 2 * C)), (f"{scope}/StyleMod/bias", r(2 * C))]
        syn += [(f"ToRGB_lod{L - res}/weight", r(1, 1, C, 3)), (f"ToRGB_lod{L - res}/bias", r(3))]
    return [("lod", np.float32(0)), ("dlatent_avg", r(W_DIM))], mapping, syn


def discriminator_variables(rng):
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    d = [("lod", np.float32(0)), ("FromRGB_lod0/weight", r(1, 1, 3, nf(L - 1))),
         ("FromRGB_lod0/bias", r(nf(L - 1)))]
    for res in range(L, 2, -1):
        s, a, b = f"{2 ** res}x{2 ** res}", nf(res - 1), nf(res - 2)
        d += [(f"{s}/Conv0/weight", r(3, 3, a, a)), (f"{s}/Conv0/bias", r(a)),
              (f"{s}/Conv1_down/weight", r(3, 3, a, b)), (f"{s}/Conv1_down/bias", r(b)),
              (f"FromRGB_lod{L - res + 1}/weight", r(1, 1, 3, b)), (f"FromRGB_lod{L - res + 1}/bias", r(b))]
    return d + [("4x4/Conv/weight", r(3, 3, nf(1) + 1, nf(1))), ("4x4/Conv/bias", r(nf(1))),
                ("4x4/Dense0/weight", r(nf(1) * 16, nf(0))), ("4x4/Dense0/bias", r(nf(0))),
                ("4x4/Dense1/weight", r(nf(0), 1)), ("4x4/Dense1/bias", r(1))]


def official_networks(Network, src, seed=0, g_kwargs=KWARGS, d_func="D_basic"):
    """(G, D, Gs) as the official training loop pickles them; G and Gs hold different values."""
    rng = np.random.default_rng(seed)

    def net(name, func, variables, kwargs=g_kwargs, **components):
        return Network(version=3, name=name, static_kwargs=dict(kwargs), components=components,
                       build_module_src=src, build_func_name=func, variables=variables)

    def generator(name):
        own, mapping, syn = generator_variables(rng)
        return net(name, "G_style", own, synthesis=net("G_synthesis", "G_synthesis", syn),
                   mapping=net("G_mapping", "G_mapping", mapping, dict(g_kwargs, dlatent_broadcast=NUM_LAYERS)))
    G = generator("G")
    return G, net("D", d_func, discriminator_variables(rng), KWARGS), generator("Gs")


def flat(network):
    """Network -> {name: array}, sub-networks under their names, as the official Network.vars."""
    out = dict(network.state["variables"])
    for comp in network.state["components"].values():
        out.update({f"{comp.state['name']}/{k}": v for k, v in flat(comp).items()})
    return out


@pytest.fixture
def official(network_class, tmp_path):
    """(path, {"G", "D", "Gs": {official name: array}}, sentinel). build_module_src would create the
    sentinel file if anything executed it."""
    sentinel = tmp_path / "build_module_src_ran"
    nets = official_networks(network_class, f"open({str(sentinel)!r}, 'w').close()\n")
    path = tmp_path / "karras2019stylegan-tiny-32x32.pkl"
    with open(path, "wb") as f:
        pickle.dump(nets, f, protocol=4)
    return str(path), dict(zip(("G", "D", "Gs"), map(flat, nets))), sentinel


# ----------------------------------------------------------------------------------------------
# Loading: every variable in exactly one tensor, every tensor filled

LAYOUTS = {2: [(1, 0)], 4: [(3, 2, 0, 1)]}  # TF dense [in, out], conv [kh, kw, in, out] -> torch


def test_every_variable_fills_exactly_one_tensor(official):
    path, variables, sentinel = official
    G, D, G_ema, info = sg.load_official(path)
    assert G_ema.cfg == sg.StyleGANConfig(resolution=RES, fmap_base=FMAP_BASE, fmap_max=FMAP_MAX,
                                          z_dim=Z_DIM, w_dim=W_DIM, mapping_fmaps=MAPPING_FMAPS,
                                          mapping_layers=MAPPING_LAYERS)
    assert info == {"res": RES, "alpha": 1.0, "cur_nimg": None} and not G_ema.training
    for net, key in ((G, "G"), (D, "D"), (G_ema, "Gs")):
        state = net.state_dict()
        assert len({t.data_ptr() for t in state.values()}) == len(state)
        hits = {k: [] for k in state}
        for name, a in variables[key].items():
            if name.endswith("lod"):
                continue
            layouts = [torch.from_numpy(a)] + [torch.from_numpy(a).permute(p) for p in LAYOUTS.get(a.ndim, [])]
            found = [k for k, t in state.items()
                     if any(t.shape == v.shape and torch.equal(t, v) for v in layouts)]
            assert len(found) == 1, f"{key} {name} fills {found}"
            hits[found[0]].append(name)
        assert all(len(names) == 1 for names in hits.values()), {k: v for k, v in hits.items() if len(v) != 1}
    # spot checks of the naming against networks_stylegan.py (the numbers above are all distinct)
    gs, d = variables["Gs"], variables["D"]
    blocks = G_ema.synthesis.blocks
    pairs = [(G_ema.w_avg, gs["dlatent_avg"]), (blocks[1].epi1.noise_const, gs["G_synthesis/noise3"]),
             (blocks[3].torgb.bias, gs["G_synthesis/ToRGB_lod0/bias"]),
             (blocks[0].torgb.bias, gs[f"G_synthesis/ToRGB_lod{L - 2}/bias"]),
             (blocks[2].epi0.noise_weight, gs["G_synthesis/16x16/Conv0_up/Noise/weight"]),
             (G_ema.mapping.layers[2].bias, gs["G_mapping/Dense2/bias"]),
             (D.fromrgb[L - 2].bias, d["FromRGB_lod0/bias"]),
             (D.fromrgb[0].bias, d[f"FromRGB_lod{L - 2}/bias"]),
             (D.blocks[L - 3].conv1.bias, d[f"{RES}x{RES}/Conv1_down/bias"])]
    for tensor, array in pairs:
        assert torch.equal(tensor, torch.from_numpy(array))
    assert not sentinel.exists()


# ----------------------------------------------------------------------------------------------
# The loaded networks against the official formulas, in float64 numpy from the raw arrays

def lrelu(x):
    return np.maximum(x, 0.2 * x)


def conv(x, w, gain=math.sqrt(2)):
    """tf.nn.conv2d NCHW 'SAME' of the runtime weight w * gain / sqrt(fan_in) (get_weight, use_wscale)."""
    k, H, W = w.shape[0], x.shape[2], x.shape[3]
    w = w.astype(np.float64) * gain / math.sqrt(np.prod(w.shape[:-1]))
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    return sum(np.einsum("nchw,co->nohw", xp[:, :, i:i + H, j:j + W], w[i, j])
               for i in range(k) for j in range(k))


def dense(x, w, gain=math.sqrt(2), lrmul=1.0):
    return x @ (w.astype(np.float64) * gain / math.sqrt(w.shape[0]) * lrmul)


def epilogue(x, v, scope, noise, w):
    """layer_epilogue: noise, bias, lrelu, instance norm, style_mod (dense gain 1, [ys | yb])."""
    x = x + noise * v[f"{scope}/Noise/weight"][None, :, None, None]
    x = lrelu(x + v[f"{scope}/bias"][None, :, None, None])
    x = x - x.mean(axis=(2, 3), keepdims=True)
    x = x / np.sqrt(np.square(x).mean(axis=(2, 3), keepdims=True) + 1e-8)
    style = dense(w, v[f"{scope}/StyleMod/weight"], gain=1) + v[f"{scope}/StyleMod/bias"]
    C = x.shape[1]
    return x * (style[:, :C, None, None] + 1) + style[:, C:, None, None]


def blur(x):
    f, (H, W) = np.outer([1, 2, 1], [1, 2, 1]) / 16, x.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(f[i, j] * xp[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3))


def official_g8(v, z):
    """G_mapping, then G_synthesis up to 8x8 with the stored noise maps (randomize_noise=False)."""
    x = z / np.sqrt(np.square(z).mean(axis=1, keepdims=True) + 1e-8)
    for i in range(MAPPING_LAYERS):  # lrmul 0.01 on weights and biases
        x = lrelu(dense(x, v[f"G_mapping/Dense{i}/weight"], lrmul=0.01) + v[f"G_mapping/Dense{i}/bias"] * 0.01)
    w, s, n = x, "G_synthesis/", lambda i: v[f"G_synthesis/noise{i}"]  # noqa: E731
    x = epilogue(np.tile(v[s + "4x4/Const/const"], (len(z), 1, 1, 1)), v, s + "4x4/Const", n(0), w)
    x = epilogue(conv(x, v[s + "4x4/Conv/weight"]), v, s + "4x4/Conv", n(1), w)
    x = blur(conv(x.repeat(2, axis=2).repeat(2, axis=3), v[s + "8x8/Conv0_up/weight"]))  # upscale2d: nearest
    x = epilogue(x, v, s + "8x8/Conv0_up", n(2), w)
    x = epilogue(conv(x, v[s + "8x8/Conv1/weight"]), v, s + "8x8/Conv1", n(3), w)
    lod = f"{s}ToRGB_lod{L - 3}"
    return w, conv(x, v[lod + "/weight"], gain=1) + v[lod + "/bias"][None, :, None, None]


def official_d4(v, img):
    """D_basic on 4x4 images: FromRGB, minibatch stddev (group 4), Conv, Dense0, Dense1 (gain 1)."""
    x = lrelu(conv(img, v[f"FromRGB_lod{L - 2}/weight"]) + v[f"FromRGB_lod{L - 2}/bias"][None, :, None, None])
    std = np.sqrt(x.var(axis=0) + 1e-8).mean()  # one group of 4 (the whole batch), one feature
    x = np.concatenate([x, np.full((len(x), 1, 4, 4), std)], axis=1)
    x = lrelu(conv(x, v["4x4/Conv/weight"]) + v["4x4/Conv/bias"][None, :, None, None])
    x = lrelu(dense(x.reshape(len(x), -1), v["4x4/Dense0/weight"]) + v["4x4/Dense0/bias"])
    return dense(x, v["4x4/Dense1/weight"], gain=1) + v["4x4/Dense1/bias"]


def test_loaded_networks_compute_the_official_formulas(official):
    """Holds the weight-scale mapping (lrmul 0.01 in the mapping network, gain 1 in the styles and
    ToRGB), the kernel transposes, the style order, the noise maps and D's flatten order to numbers."""
    path, variables, _ = official
    G, D, G_ema, _ = sg.load_official(path)
    z = np.random.RandomState(0).randn(4, Z_DIM)
    for net, key in ((G, "G"), (G_ema, "Gs")):
        w_ref, img_ref = official_g8(variables[key], z)
        with torch.no_grad():
            w = net.map(torch.from_numpy(z).float(), psi=1.0)
            img = net(torch.from_numpy(z).float(), res=8, noise_mode="const").double().numpy()
        np.testing.assert_allclose(w[:, 0].double().numpy(), w_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(img, img_ref, rtol=1e-4, atol=1e-4 * np.abs(img_ref).max())
    img = np.random.RandomState(1).randn(4, 3, 4, 4)
    with torch.no_grad():
        logits = D(torch.from_numpy(img).float()).double().numpy()
    ref = official_d4(variables["D"], img)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# ----------------------------------------------------------------------------------------------
# Writing: the two directions round-trip exactly

class RawUnpickler(pickle.Unpickler):
    """Reads a file's raw structure here, independently of stylegan.py, and records its globals."""

    def __init__(self, f, Network):
        super().__init__(f)
        self.Network, self.seen = Network, set()

    def find_class(self, module, name):
        self.seen.add(f"{module}.{name}")
        if (module, name) == ("dnnlib.tflib.network", "Network"):
            return self.Network
        if hasattr(np, "_core"):  # numpy 2 reads numpy.core through a deprecated shim
            module = module.replace("numpy.core", "numpy._core")
        return super().find_class(module, name)


def read_raw(path, Network):
    with open(path, "rb") as f:
        u = RawUnpickler(f, Network)
        return u.load(), u.seen


def test_official_project_official_is_exact(official, network_class, tmp_path):
    path, _, _ = official
    out = tmp_path / "again.pkl"
    sg.save_official(str(out), sg.read_official(path))
    (a, _), (b, seen) = read_raw(path, network_class), read_raw(out, network_class)
    assert seen == {"dnnlib.tflib.network.Network", "numpy.core.multiarray._reconstruct", "numpy.ndarray",
                      "numpy.dtype", "numpy.core.multiarray.scalar"}  # the names official files use
    for x, y in zip(a, b):
        assert set(x.state) == set(y.state) and x.state["version"] == y.state["version"] == 3
        for net_x, net_y in [(x, y)] + [(x.state["components"][k], y.state["components"][k])
                                        for k in x.state["components"]]:
            assert list(net_x.state["components"]) == list(net_y.state["components"])
            for k in ("name", "build_func_name"):
                assert net_x.state[k] == net_y.state[k]
            vx, vy = net_x.state["variables"], net_y.state["variables"]
            assert [n for n, _ in vx] == [n for n, _ in vy]  # same names in the official creation order
            for (n, u), (_, v) in zip(vx, vy):
                assert type(u) is type(v) and u.dtype == v.dtype == np.float32 and np.array_equal(u, v), n
        assert y.state["build_module_src"] == sg.OFFICIAL_PLACEHOLDER_SRC
        assert y.state["static_kwargs"].items() >= KWARGS.items()


VARIANTS = {"small": {}, "no-noise-no-mapping": dict(use_noise=False, mapping_layers=0),
            # the paper's traditional generator, where this project's config has it (Table 1 b)
            **({"table1-b": dict(getattr(sg, "TRADITIONAL", {}))} if hasattr(sg, "TRADITIONAL") else {}),
            "no-mbstd": dict(mbstd_group_size=1)}  # official D_basic without the stddev layer


@pytest.mark.parametrize("variant", VARIANTS)
def test_project_official_project_is_exact(variant, network_class, tmp_path):
    base = dict(resolution=16, fmap_base=128, fmap_max=32, z_dim=24, w_dim=24, mapping_fmaps=24,
                mapping_layers=2, mbstd_group_size=2)
    cfg = sg.StyleGANConfig(**{**base, **VARIANTS[variant]})
    nets = {"G": sg.Generator(cfg), "D": sg.Discriminator(cfg), "G_ema": sg.Generator(cfg)}
    with torch.no_grad():
        for net in nets.values():
            for t in net.state_dict().values():  # non-zero biases, noise strengths and w_avg
                t.copy_(torch.randn_like(t))
    ckpt = dict(config=cfg.to_dict(), res=8, alpha=0.25, **{k: n.state_dict() for k, n in nets.items()})
    path = tmp_path / "export.pkl"
    src = "def G_style(): pass\ndef G_mapping(): pass\ndef G_synthesis(): pass\ndef D_basic(): pass\n"
    sg.save_official(str(path), ckpt, build_src=src)
    assert read_raw(path, network_class)[0][2].state["build_module_src"] == src
    back = sg.read_official(str(path))
    assert back["config"] == cfg.to_dict() and (back["res"], back["alpha"]) == (8, 0.25)
    for key, net in nets.items():
        assert back[key].keys() == net.state_dict().keys()
        for name, t in net.state_dict().items():
            assert torch.equal(back[key][name], t), f"{key}.{name}"
    with pytest.raises(ValueError, match="does not define G_style"):
        sg.save_official(str(path), ckpt, build_src="print('hello')")
    with pytest.raises(ValueError, match="needs a full train.py checkpoint"):
        sg.save_official(str(path), {"config": cfg.to_dict(), "G_ema": ckpt["G_ema"]})


# ----------------------------------------------------------------------------------------------
# Refusals: code in the file never runs; broken and foreign files are clear errors

class Payload:
    """Unpickles as eval(code): here, creating a file."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


def test_code_in_a_pickle_never_runs(network_class, tmp_path):
    sentinel = tmp_path / "pwned"
    code = f"open({str(sentinel)!r}, 'w').close()"
    G, D, Gs = official_networks(network_class, "")  # an official file, the payload deep inside a variable
    Gs.state["components"]["synthesis"].state["variables"][3] = ("noise2", Payload(code))
    payloads = [("os.system", b"cos\nsystem\n(S'touch " + str(sentinel).encode() + b"'\ntR."),
                ("builtins.eval", pickle.dumps(Payload(code))),
                ("builtins.eval", pickle.dumps((G, D, Gs), protocol=4)),
                ("collections.OrderedDict", pickle.dumps((G, D, collections.OrderedDict()), protocol=4)),
                ("dnnlib.tflib.network.Evil", b"\x80\x04\x8c\x14dnnlib.tflib.network\x8c\x04Evil\x93)\x81.")]
    for i, (name, payload) in enumerate(payloads):
        path = tmp_path / f"evil{i}.pkl"
        path.write_bytes(payload)
        with pytest.raises(ValueError, match=f"refused global {name}"):
            sg.load_official(str(path))
        assert not sentinel.exists(), name
    pickle.loads(payloads[2][1])
    assert sentinel.exists()  # the control: under plain pickle the payload does run


def test_broken_and_foreign_files_are_clear_errors(official, network_class, tmp_path):
    path, _, sentinel = official
    data = open(path, "rb").read()
    cases = {"truncated.pkl": (data[:len(data) // 2], "not a readable official StyleGAN pickle"),
             "empty.pkl": (b"", "not a readable official StyleGAN pickle.*EOFError"),
             "text.pkl": (b"hello, world", "not a readable official StyleGAN pickle"),
             "dict.pkl": (pickle.dumps({"G": 1}), "not an official StyleGAN pickle: it holds a dict")}
    buf = tmp_path / "torch.pkl"
    torch.save({"G": torch.zeros(2)}, buf)  # a torch checkpoint (a zip) under a .pkl name
    cases["torch.pkl"] = (buf.read_bytes(), "not a readable official StyleGAN pickle")
    G, D, Gs = official_networks(network_class, "", d_func="D_stylegan2")
    cases["stylegan2.pkl"] = (pickle.dumps((G, D, Gs), protocol=4), "built by 'D_stylegan2'.*StyleGAN2")
    G, D, Gs = official_networks(network_class, "", g_kwargs=dict(KWARGS, label_size=10))
    cases["labels.pkl"] = (pickle.dumps((G, D, Gs), protocol=4),
                           "label_size=10; this project builds label_size=0")
    G, D, Gs = official_networks(network_class, "")
    del Gs.state["components"]["synthesis"].state["variables"][5]
    cases["missing.pkl"] = (pickle.dumps((G, D, Gs), protocol=4),
                            r"\(G_ema\) does not match.*missing \['G_synthesis/")
    for name, (payload, message) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match=message):
            sg.load_official(str(tmp_path / name))
    assert not sentinel.exists()


# ----------------------------------------------------------------------------------------------
# Entry points

def test_sample_metrics_train_and_export_take_the_file(official, network_class, tmp_path, capsys):
    path, _, sentinel = official
    G, D, G_ema, _ = sg.load_official(path)
    out = sample.main(["--ckpt", path, "--seeds", "0-1", "--psi", "0.7", "--out", str(tmp_path / "s.png"),
                       "--individual", "--impl", "ref"])
    z = sample.seeds_to_z([0, 1], Z_DIM, "cpu")
    with torch.no_grad():
        expect = sg.to_uint8(G_ema.synthesis(G_ema.map(z, 0.7), RES, noise_mode="const"))
    expect = expect.permute(0, 2, 3, 1).numpy()
    assert all(np.array_equal(np.asarray(Image.open(p)), e) for p, e in zip(out, expect))
    import metrics
    result = metrics.main(["--ckpt", path, "--data", "builtin", "--metrics", "swd", "--num", "32",
                           "--device", "cpu", "--quiet"])
    assert (result["res"], result["num"]) == (RES, 32) and "swd32" in result  # (random weights saturate)

    images = tmp_path / "images"  # fine-tuning needs data at the network's resolution
    images.mkdir()
    for i in range(8):
        pixels = np.random.RandomState(i).randint(0, 256, (RES, RES, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    common = ["--kimg", "0.008", "--batch", "4", "--tick-kimg", "0.008", "--amp", "off", "--impl", "ref"]
    with pytest.raises(SystemExit, match="the network is 32x32, the dataset 1024x1024"):
        train.main(["--data", "builtin", "--resume", path, "--out", str(tmp_path / "runs"), *common])
    run_dir = train.main(["--data", str(images), "--resume", path, "--out", str(tmp_path / "runs"), *common])
    ckpt = torch.load(os.path.join(run_dir, "ckpt.pt"), weights_only=True)
    assert ckpt["cur_nimg"] == 8 and (ckpt["res"], ckpt["alpha"]) == (RES, 1.0)
    assert ckpt["config"] == G.cfg.to_dict() and ckpt["args"]["start_res"] == RES
    moved = (ckpt["G"]["mapping.layers.0.weight"] - G.mapping.layers[0].weight).abs().max()
    assert 0 < moved < 0.1  # two steps from the official weights, not from a fresh init

    exported = tmp_path / "exported.pkl"
    assert sample.main(["--ckpt", os.path.join(run_dir, "ckpt.pt"), "--export-official", str(exported)]) \
        == [str(exported)]
    back = sg.read_official(str(exported))
    for key in ("G", "D", "G_ema"):
        assert all(torch.equal(back[key][k], v) for k, v in ckpt[key].items())
    assert "wrote" in capsys.readouterr().out and not sentinel.exists()
    with pytest.raises(SystemExit, match="--export-official: needs a full train.py checkpoint"):
        snapshot = [f for f in os.listdir(run_dir) if f.startswith("snapshot-")][0]
        sample.main(["--ckpt", os.path.join(run_dir, snapshot), "--export-official", str(exported)])
