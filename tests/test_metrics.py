"""Tests for metrics.py: the FID network, Frechet distance, KID, SWD, the stats cache, evaluate() and
the command line. The Inception weights cannot be had offline, so tests build random weights
explicitly (never through load_inception's default path). Run: python -m pytest tests/test_metrics.py
"""
import os
import time
import urllib.error
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_TSV = os.path.join(ROOT, "..", "shared", "fid", "pt_inception_state_dict_shapes.tsv")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The Inception forwards dominate this file. On a shared 2-core machine, two OpenMP threads that
    # spin at barriers ran them 14x slower than one thread (4.9 s vs 0.35 s for two images, measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = metrics.FIDInceptionV3().eval().requires_grad_(False)
    n.tag = "test-random"
    return n


@pytest.fixture(scope="module")
def weights_file(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "my_inception.pth"
    torch.save(net.state_dict(), path)
    return str(path)


def random_spd(d, rng):
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 0.1 * np.eye(d)


def write_images(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, x in enumerate(images):
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(os.path.join(folder, f"{i}.png"))
    return str(folder)


def smooth_images(n, res, seed):
    """Low-frequency colour blobs: a set with different statistics from uniform noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g) * 255
    return torch.nn.functional.interpolate(x, size=(res, res), mode="bilinear").to(torch.uint8)


# --- the FID network ---------------------------------------------------------------------------

def test_state_dict_matches_pytorch_fid_names_and_shapes():
    if not os.path.isfile(SHAPES_TSV):
        pytest.skip(f"{SHAPES_TSV} not present")
    state = {}
    for line in open(SHAPES_TSV):
        name, shape = line.rstrip("\n").split("\t")
        dims = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
        counter = name.endswith("num_batches_tracked")
        state[name] = torch.zeros(dims, dtype=torch.long if counter else torch.float)
    assert len(state) == 566
    model = metrics.FIDInceptionV3()
    model.load_state_dict(state, strict=True)  # raises on any missing, unexpected or misshapen tensor
    shapes = lambda sd: {k: list(v.shape) for k, v in sd.items()}
    assert shapes(model.state_dict()) == shapes(state)


def test_features_shape_determinism_and_batch_invariance(net):
    x = torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    f = net(x)
    assert f.shape == (2, 2048) and f.dtype == torch.float32 and torch.isfinite(f).all()
    assert f.std() > 0.1  # random He-initialised weights still give informative features
    assert torch.equal(f, net(x))  # eval mode: no batch statistics, no dropout
    f_split = metrics.extract(x.split(1), net)[0]  # two batches of one
    torch.testing.assert_close(f_split, f, rtol=1e-5, atol=1e-5)


def test_preprocess_is_pytorch_fid_and_generator_output_is_floored():
    x = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    y = metrics.fid_preprocess(x)  # a 299x299 image passes the resize unchanged: x / 255 * 2 - 1
    torch.testing.assert_close(y, x.float() / 255 * 2 - 1, rtol=0, atol=1e-6)
    small = metrics.fid_preprocess(x[:, :, :64, :64])
    assert small.shape == (2, 3, 299, 299) and small.min() >= -1 and small.max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        metrics.fid_preprocess(x.float())
    g = torch.linspace(-1.1, 1.1, 1001)
    expect = np.clip(np.floor(g.numpy().astype(np.float32) * np.float32(127.5) + np.float32(128)), 0, 255)
    assert np.array_equal(metrics.to_uint8(g).numpy(), expect.astype(np.uint8))
    assert metrics.to_uint8(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]


# --- Frechet distance and KID ------------------------------------------------------------------

def test_frechet_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(64), random_spd(64, rng)
    assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-6
    # few samples: rank-deficient covariance, where naive eigenvalue square roots amplify noise
    f = rng.standard_normal((10, 512)) * 3
    mu, s = metrics.feature_stats(f)
    assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-6


def test_frechet_matches_closed_form():
    rng = np.random.default_rng(1)
    d, c = 32, 2.0
    b = rng.uniform(0.5, 3.0, d)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s2 = q @ np.diag(b) @ q.T  # S1 = c I commutes with S2, so tr sqrt(S1 S2) = sqrt(c) sum sqrt(b)
    expect = ((mu1 - mu2) ** 2).sum() + d * c + b.sum() - 2 * np.sqrt(c) * np.sqrt(b).sum()
    assert metrics.frechet_distance(mu1, c * np.eye(d), mu2, s2) == pytest.approx(expect, rel=1e-10)
    a = rng.uniform(0.5, 3.0, d)  # two diagonal covariances: sum (sqrt a - sqrt b)^2
    assert metrics.frechet_distance(mu1, np.diag(a), mu1, np.diag(b)) == pytest.approx(
        ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), rel=1e-10)


def test_frechet_few_samples_matches_gram_matrix_form():
    # S = A^T A / (n - 1) with centred features A [n, D]: tr (S1 S2)^(1/2) is the nuclear norm of
    # A1 A2^T / sqrt((n1 - 1)(n2 - 1)), an exact reference for rank-deficient covariances
    rng = np.random.default_rng(5)
    f1, f2 = rng.standard_normal((10, 2048)), rng.standard_normal((14, 2048)) * 1.5 + 0.1
    a1, a2 = f1 - f1.mean(0), f2 - f2.mean(0)
    nuclear = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt(9 * 13)
    (mu1, s1), (mu2, s2) = metrics.feature_stats(f1), metrics.feature_stats(f2)
    expect = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * nuclear
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expect, rel=1e-10)
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expect, rel=1e-10)


def test_frechet_matches_scipy_sqrtm_formula():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    for d in (8, 100):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = random_spd(d, rng), random_spd(d, rng)
        covmean = linalg.sqrtm(s1 @ s2).real  # pytorch-fid's formula
        ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="do not match"):
        metrics.frechet_distance(mu1, s1, mu2[:5], s2[:5, :5])


def test_kid_matches_direct_unbiased_mmd_and_is_symmetric():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((30, 8)), rng.standard_normal((30, 8)) + 0.3
    k = lambda a, b: (a @ b / 8 + 1) ** 3
    n = len(x)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / n ** 2
    got = metrics.kid(x, y, num_subsets=3)  # subsets of the whole set: every subset is x and y
    assert got == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert metrics.kid(y, x, num_subsets=3) == pytest.approx(got, rel=1e-12)


def test_kid_near_zero_for_same_distribution_and_larger_when_shifted():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((500, 64)), rng.standard_normal((500, 64))
    same = metrics.kid(a, b, num_subsets=20, max_subset_size=200)
    shifted = metrics.kid(a, b + 0.5, num_subsets=20, max_subset_size=200)
    assert abs(same) < 0.01 and shifted > 0.05, (same, shifted)


# --- SWD ---------------------------------------------------------------------------------------

def test_laplacian_pyramid_collapses_back_and_matches_scipy_mirror_filter():
    x = torch.rand(2, 3, 32, 32) * 255
    pyr = metrics.laplacian_pyramid(x, 3)
    assert [p.shape[-1] for p in pyr] == [32, 16, 8]
    img = pyr[-1]
    for band in reversed(pyr[:-1]):  # upsample by zero insertion and 4x blur, then add the band
        up = torch.zeros_like(band)
        up[:, :, ::2, ::2] = img
        img = band + metrics.binomial5(up, 4)
    torch.testing.assert_close(img, x, rtol=0, atol=1e-3)
    ndimage = pytest.importorskip("scipy.ndimage")  # ProGAN's pyr_down / pyr_up, in float64
    k = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1])[None, None] / 256
    xd = x.double().numpy()
    down = ndimage.convolve(xd, k, mode="mirror")[:, :, ::2, ::2]
    up = np.zeros_like(xd)
    up[:, :, ::2, ::2] = down
    band = xd - ndimage.convolve(up, 4 * k, mode="mirror")
    two = metrics.laplacian_pyramid(x, 2)
    np.testing.assert_allclose(two[1].numpy(), down, atol=1e-3)
    np.testing.assert_allclose(two[0].numpy(), band, atol=1e-3)


def test_swd_descriptors_are_pyramid_patches():
    x = smooth_images(2, 64, 0)
    desc = metrics.swd_descriptors(x, torch.Generator().manual_seed(0))
    assert metrics.swd_levels(64) == [64, 32, 16] and list(desc) == [64, 32, 16]
    pyr = metrics.laplacian_pyramid(x.float(), 3)
    for level, d in zip(pyr, desc.values()):
        assert d.shape == (2 * metrics.SWD_NHOODS, 3, 7, 7) and d.dtype == torch.float16
        patches = level.unfold(2, 7, 1).unfold(3, 7, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 147)
        nearest = torch.cdist(d[:20].float().flatten(1), patches.half().float(),
                              compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)[0]
        assert nearest.max() < 1e-3  # every descriptor is some 7x7 neighbourhood of its level
    with pytest.raises(ValueError, match="8x8"):
        metrics.swd_levels(4)


def test_swd_zero_for_same_set_small_for_same_distribution_large_for_different():
    g = lambda s: torch.Generator().manual_seed(s)
    noise = torch.randint(0, 256, (128, 3, 16, 16), dtype=torch.uint8, generator=g(0))
    noise2 = torch.randint(0, 256, (128, 3, 16, 16), dtype=torch.uint8, generator=g(1))
    blobs = smooth_images(128, 16, 2)
    d_noise, d_noise2, d_blobs = (metrics.swd_descriptors(x, g(5))[16] for x in (noise, noise2, blobs))
    # 16384 descriptors a set: sampling noise of the same distribution measured at about 0.02
    same = metrics.sliced_wasserstein(d_noise, d_noise2, dir_repeats=1)
    diff = metrics.sliced_wasserstein(d_noise, d_blobs, dir_repeats=1)
    assert same < 0.03 and diff > 4 * same, (same, diff)
    small = [metrics.swd_descriptors(x, g(6)) for x in (noise[:16], blobs[:16])]
    assert metrics.swd(small[0], small[0]) == {"swd16": 0.0, "swd": 0.0}
    assert metrics.swd(small[0], small[1]) == metrics.swd(small[1], small[0])  # same directions
    with pytest.raises(ValueError, match="one resolution"):
        metrics.swd(small[0], metrics.swd_descriptors(smooth_images(2, 32, 0)))


# --- real statistics cache and evaluate() ------------------------------------------------------

class TinySet:
    """The data.py interface: .name, .resolution, len(), .at(res) -> items uint8 [3, res, res]."""

    def __init__(self, images, name="tiny"):
        self.images, self.name, self.resolution = images, name, images.shape[-1]

    def __len__(self):
        return len(self.images)

    def at(self, res):
        x = torch.nn.functional.interpolate(self.images.float(), size=(res, res), mode="area")
        return x.round().to(torch.uint8)


class Broken(TinySet):
    def at(self, res):
        raise AssertionError("the cache should have been used")


def test_real_stats_cache_round_trip(net, tmp_path):
    ds = TinySet(smooth_images(2, 32, 0))
    kw = dict(cache_dir=str(tmp_path), batch=2, workers=0, verbose=False)
    first = metrics.real_stats(ds, 32, net, **kw)
    path = metrics.cache_path(str(tmp_path), "tiny", 32, 2, "test-random")
    assert os.path.isfile(path)
    with np.load(path) as f:  # pytorch-fid's format
        assert set(f.files) == {"mu", "sigma"} and f["sigma"].shape == (2048, 2048)
    again = metrics.real_stats(Broken(ds.images), 32, net, **kw)
    np.testing.assert_array_equal(again["mu"], first["mu"])
    np.testing.assert_array_equal(again["sigma"], first["sigma"])
    with_feats = metrics.real_stats(ds, 32, net, need_features=True, **kw)  # KID: recomputed once
    assert with_feats["features"].shape == (2, 2048)
    cached = metrics.real_stats(Broken(ds.images), 32, net, need_features=True, **kw)
    np.testing.assert_array_equal(cached["features"], with_feats["features"])
    with open(path, "wb") as f:  # a damaged cache file is recomputed and replaced
        f.write(b"not an npz")
    np.testing.assert_array_equal(metrics.real_stats(ds, 32, net, **kw)["mu"], first["mu"])
    assert set(metrics.load_stats(path)) == {"mu", "sigma"} and not os.path.exists(path + ".tmp")


class ReplayG(torch.nn.Module):
    """A 'generator' that returns the dataset's images in order, as floats in [-1, 1]."""

    def __init__(self, images):
        super().__init__()
        self.images, self.i = images, 0
        self.cfg = SimpleNamespace(resolution=images.shape[-1], z_dim=8)

    def forward(self, z, res=None, alpha=1.0, psi=1.0, noise_mode="random"):
        x = self.images[self.i: self.i + len(z)]
        self.i += len(z)
        return x.float() / 127.5 - 1  # (x / 127.5 - 1) * 127.5 + 128 = x + 0.5, floored back to x


def test_evaluate_perfect_generator_scores_zero_and_worse_generator_higher(net, tmp_path):
    reals = smooth_images(3, 32, 0)
    ds = TinySet(reals)
    kw = dict(metrics=("fid", "kid", "swd"), num=3, batch=2, inception=net, cache_dir=str(tmp_path),
              workers=0, verbose=False)
    perfect = metrics.evaluate(ReplayG(reals), ds, **kw)
    assert abs(perfect["fid"]) < 1e-6 and perfect["res"] == 32 and perfect["num"] == 3
    assert {"kid", "swd", "swd32", "swd16"} <= set(perfect)
    worse = metrics.evaluate(ReplayG(reals // 2), ds, **kw)
    assert worse["fid"] > 1 and worse["kid"] > perfect["kid"], (perfect, worse)
    assert worse["swd"] > perfect["swd"], (perfect, worse)
    with pytest.raises(ValueError, match="unknown metrics"):
        metrics.evaluate(ReplayG(reals), ds, metrics="fid,is", inception=net)


# --- loading weights and bad input -------------------------------------------------------------

def test_other_weights_file_is_used_with_one_line_warning(net, weights_file, capsys):
    loaded = metrics.load_inception(weights_file)
    err = capsys.readouterr().err
    assert "not a standard FID Inception file" in err and err.count("\n") == 1
    x = smooth_images(1, 32, 3)
    assert torch.equal(loaded(x), net(x)) and loaded.tag.startswith("custom-")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated but NVIDIA ships it
def test_only_nvidias_torchscript_is_loaded(tmp_path, monkeypatch):
    """TorchScript carries code that loading it runs: a file whose sha256 is not that of NVIDIA's
    inception-2015-12-05.pt is refused, whatever its name, with how to convert it instead."""
    import hashlib

    class Features(torch.nn.Module):  # NVIDIA's interface: forward(uint8 x, return_features=True)
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            f = x.float().mean(dim=(2, 3)).repeat(1, 683)[:, :2048]
            return f if return_features else f[:, :1008]

    for name in ("scripted.pt", metrics.NV_FILE):
        path = str(tmp_path / name)
        torch.jit.script(Features()).save(path)
        with pytest.raises(ValueError, match="sha256") as e:
            metrics.load_inception(path)
        if name != metrics.NV_FILE:  # (a wrong NV_FILE fails the name's own hash check first)
            assert "is TorchScript" in str(e.value) and "torch.save(net.state_dict()" in str(e.value)
    monkeypatch.setattr(metrics, "NV_SHA256", hashlib.sha256(open(path, "rb").read()).hexdigest())
    loaded = metrics.load_inception(path)  # NVIDIA's own file, as far as its hash tells
    assert isinstance(loaded, metrics.TorchScriptInception) and loaded.tag == "nv_inception"
    assert loaded(smooth_images(3, 20, 0)).shape == (3, 2048)


def test_standard_names_must_match_known_hashes(tmp_path):
    for name in (metrics.PT_FID_FILE, metrics.NV_FILE):
        path = tmp_path / name
        path.write_bytes(b"not the real weights")
        with pytest.raises(ValueError, match="sha256"):
            metrics.load_inception(str(path))


def test_wrong_tensor_names_or_shapes_are_clear_errors(net, tmp_path):
    state = net.state_dict()
    renamed = {k.replace("Mixed_7c", "Mixed_7d"): v for k, v in state.items()}
    reshaped = {**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    for bad, match in ((renamed, "54 missing"), (reshaped, "2 wrong shapes")):
        path = str(tmp_path / "bad.pth")
        torch.save(bad, path)
        with pytest.raises(ValueError, match=match):
            metrics.load_inception(path)
    (tmp_path / "garbage.pth").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="cannot read"):
        metrics.load_inception(str(tmp_path / "garbage.pth"))
    with pytest.raises(FileNotFoundError):
        metrics.load_inception(str(tmp_path / "absent.pth"))


def test_no_weights_and_no_network_says_how_to_get_them(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.delenv("STYLEGAN_INCEPTION", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match="STYLEGAN_INCEPTION") as e:
        metrics.load_inception()
    assert metrics.PT_FID_URL in str(e.value)


# --- the two-folder command line ---------------------------------------------------------------

def test_two_folder_cli_matches_direct_computation(net, weights_file, tmp_path, capsys):
    xa, xb = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), smooth_images(3, 32, 1)
    a, _ = write_images(tmp_path / "a", xa), write_images(tmp_path / "b" / "nested", xb)
    b = str(tmp_path / "b")  # folders are searched recursively
    common = ["--inception", weights_file, "--quiet"]
    out = metrics.main([a, b, "--metrics", "fid,kid,swd", *common])
    fa, fb = net(xa), net(xb)  # PNG is lossless: the same pixels
    expect = metrics.frechet_distance(*metrics.feature_stats(fa), *metrics.feature_stats(fb))
    assert out["fid"] == pytest.approx(expect, rel=1e-9) and out["fid"] > 1
    assert out["kid"] == pytest.approx(metrics.kid(fa, fb), rel=1e-9) and out["swd"] > 0
    saved = metrics.main(["--save-stats", a, str(tmp_path / "a"), *common])  # .npz appended
    assert saved == {"saved": str(tmp_path / "a.npz"), "images": 2}
    from_npz = metrics.main([str(tmp_path / "a.npz"), b, *common])
    assert from_npz["fid"] == pytest.approx(out["fid"], rel=1e-9)
    assert '"fid"' in capsys.readouterr().out


def test_cli_bad_input_is_a_clear_error(weights_file, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    good = write_images(tmp_path / "good", smooth_images(2, 32, 0))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0.png").write_bytes(b"this is not a png")
    for args, match in (([str(empty), good], "no images"), ([str(broken), good], "cannot read image"),
                        ([good], "exactly two"), ([str(tmp_path / "nope"), good], "neither an image folder"),
                        ([good, good, "--metrics", "fid,is"], "unknown metrics")):
        with pytest.raises(SystemExit, match=match):
            metrics.main([*args, "--inception", weights_file, "--quiet"])


def test_ckpt_cli_with_the_project_generator_and_dataset(tmp_path, capsys):
    # SWD needs no weights, so the whole --ckpt path runs offline: stylegan.load_generator picks the
    # resolution and alpha the run reached, data.open_dataset the reals
    stylegan, data = pytest.importorskip("stylegan"), pytest.importorskip("data")
    import dataclasses
    cfg = stylegan.StyleGANConfig(resolution=16, z_dim=32, w_dim=32, mapping_layers=2, mapping_fmaps=32,
                                  fmap_base=64, fmap_max=32)
    G = stylegan.Generator(cfg)
    ckpt = str(tmp_path / "ckpt.pt")
    torch.save({"config": dataclasses.asdict(cfg), "G_ema": G.state_dict(), "res": 8, "alpha": 0.5}, ckpt)
    out = metrics.main(["--ckpt", ckpt, "--data", data.BUILTIN, "--metrics", "swd", "--num", "32",
                        "--device", "cpu", "--quiet"])
    assert out["res"] == 8 and out["num"] == 32 and set(out) >= {"swd8", "swd"} and out["swd"] > 0
    assert '"swd8"' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--ckpt needs --data"):
        metrics.main(["--ckpt", ckpt])


def _distributed_worker(rank, world, init_file, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)
    torch.set_num_threads(1)
    gathered = metrics.gather(torch.full((rank + 1, 3), float(rank)), "cpu", world)  # unequal row counts
    torch.manual_seed(0)  # the same random Inception on every rank
    net = metrics.FIDInceptionV3().eval().requires_grad_(False)
    reals = smooth_images(4, 32, 0)
    G = ReplayG(reals)
    G.i = 2 * rank  # rank r generates its share: reals[2r : 2r + 2]
    result = metrics.evaluate(G, TinySet(reals), ("fid", "swd"), num=4, batch=2, inception=net, rank=rank,
                              world_size=world, workers=0, verbose=False)
    torch.save({"gathered": gathered, "result": result}, os.path.join(out_dir, f"{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_evaluate_shares_work_over_ranks_and_gathers_on_rank_0(tmp_path):
    torch.multiprocessing.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)),
                                nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))
    expect = torch.cat([torch.zeros(1, 3), torch.ones(2, 3)])
    assert torch.equal(r0["gathered"], expect) and torch.equal(r1["gathered"], expect)
    assert r1["result"] == {}
    # the two ranks' generated halves together are exactly the real set, as are the real halves
    assert abs(r0["result"]["fid"]) < 1e-6 and r0["result"]["num"] == 4 and r0["result"]["swd"] > 0


def test_progress_in_a_log_has_no_carriage_returns(capsys, monkeypatch):
    """Not a terminal (pytest captures stderr): no self-overwriting spinner, a line per 30 s and
    one at the end."""
    monkeypatch.setattr(metrics, "_last_progress", [0.0])
    t0 = time.time()
    for done in range(0, 101, 10):
        metrics.progress("generated", done, 100, t0)
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 1 and "generated: 100/100 images" in err
