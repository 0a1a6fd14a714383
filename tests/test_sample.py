"""Tests for sample.py: every output and figure from a real (tiny) train.py checkpoint, checked
against direct generator calls pixel for pixel, plus clear errors for bad input."""
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

import kernels
import sample
import stylegan as sg
import train

CELL = 64  # figures enlarge the 8x8 outputs of the tiny run to 64x64 cells


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A 16x16 run stopped while 8x8 fades in (res 8, alpha 0.5): a few seconds on a CPU."""
    out = tmp_path_factory.mktemp("runs")
    impl, handlers = kernels.IMPL, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_dir = train.main(["--data", "builtin", "--res", "16", "--start-res", "4", "--phase-kimg", "0.016",
                              "--fmap-base", "64", "--fmap-max", "16", "--w-dim", "16", "--batch", "8",
                              "--kimg", "0.032", "--tick-kimg", "0.032", "--amp", "off", "--impl", "ref",
                              "--out", str(out)])
    finally:  # train.main sets these process-wide
        kernels.IMPL = impl
        for s, h in handlers.items():
            signal.signal(s, h)
    return f"{run_dir}/ckpt.pt"


def run(ckpt, tmp_path, *flags):
    return sample.main(["--ckpt", ckpt, "--out", str(tmp_path / "s.png"), "--impl", "ref", *flags])


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def assert_close_px(a, b):
    """Equal within one 8-bit level: the same image computed in a different batch can differ in the
    last float bit, which may flip one rounding to uint8."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def cells(path, cell=CELL):
    """A grid PNG -> [rows][cols] arrays of its cells."""
    a = pixels(path)
    return [[a[r:r + cell, c:c + cell] for c in range(0, a.shape[1], cell)] for r in range(0, a.shape[0], cell)]


def expected(ckpt, seeds, psi, cell=CELL):
    """The images sample.py should write, computed here from the generator directly (uint8, enlarged
    like save_grid). The seed convention is the official one: RandomState(seed).randn(z_dim)."""
    G, info = sg.load_generator(ckpt)
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.cfg.z_dim) for s in seeds])).float()
    with torch.no_grad():
        ws = G.map(z, psi)
        x = torch.cat([G.synthesis(w, info["res"], info["alpha"], noise_mode="const")
                       for w in ws.split(1)])
    x = (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    x = x.repeat_interleave(cell // x.shape[-1], 2).repeat_interleave(cell // x.shape[-1], 3)
    return x.permute(0, 2, 3, 1).numpy()


def test_checkpoint_is_mid_fade(ckpt):
    _, info = sg.load_generator(ckpt)
    assert info["res"] == 8 and 0 < info["alpha"] < 1  # the samples below exercise the fade path


@pytest.fixture(autouse=True)
def reference_kernels(monkeypatch):
    monkeypatch.setattr(kernels, "IMPL", "ref")  # expected() uses the references, like --impl ref


def test_grid_matches_generator_and_is_reproducible(ckpt, tmp_path):
    path, = run(ckpt, tmp_path, "--seeds", "0-2,7", "--psi", "0.7", "--nrow", "2")
    assert Image.open(path).size == (2 * CELL, 2 * CELL)
    grid = cells(path)
    want = expected(ckpt, [0, 1, 2, 7], 0.7)
    for i in range(4):
        assert_close_px(grid[i // 2][i % 2], want[i])
    assert not np.array_equal(want[0], want[1])  # different seeds, different images
    again, = sample.main(["--ckpt", ckpt, "--seeds", "0-2,7", "--psi", "0.7", "--nrow", "2", "--impl", "ref",
                          "--out", str(tmp_path / "again.png")])
    np.testing.assert_array_equal(pixels(again), pixels(path))


def test_random_noise_is_reproducible_and_triton_path_agrees(ckpt, tmp_path):
    """--noise-mode random reseeds per run. The Triton kernels (interpreted on CPU) agree with the
    references within 3/255 (mean under 1/255): the tiny run's 4x4 planes are nearly constant, so
    instance norm magnifies last-bit differences (measured: 0.013 max, 0.0026 mean in [-1, 1])."""
    a, = run(ckpt, tmp_path, "--seeds", "3", "--noise-mode", "random", "--out", str(tmp_path / "a.png"))
    b, = run(ckpt, tmp_path, "--seeds", "3", "--noise-mode", "random", "--out", str(tmp_path / "b.png"))
    np.testing.assert_array_equal(pixels(a), pixels(b))
    assert np.abs(pixels(a).astype(int) - expected(ckpt, [3], 0.7)[0]).max() > 3  # not the const noise
    c, = sample.main(["--ckpt", ckpt, "--seeds", "3", "--impl", "auto", "--out", str(tmp_path / "c.png")])
    diff = np.abs(pixels(c).astype(int) - expected(ckpt, [3], 0.7)[0].astype(int))
    assert diff.max() <= 3 and diff.mean() < 1


def test_individual_pngs_are_exact_outputs(ckpt, tmp_path):
    paths = run(ckpt, tmp_path, "--seeds", "4,9", "--psi", "1", "--individual")
    assert [p.rsplit("/", 2)[-2:] for p in paths] == [["s", "seed0004.png"], ["s", "seed0009.png"]]
    want = expected(ckpt, [4, 9], 1.0, cell=8)
    for path, w in zip(paths, want):
        assert Image.open(path).size == (8, 8)
        assert_close_px(pixels(path), w)


def test_mixing(ckpt, tmp_path):
    """At 8x8 every layer in use is coarse: copying B's coarse styles gives B's image exactly, and
    copying the middle or fine styles (unused at 8x8) leaves A's image."""
    paths = run(ckpt, tmp_path, "--figure", "mixing", "--seeds", "0-2", "--seeds-b", "10,11")
    assert [p.rsplit("_", 1)[-1] for p in paths] == ["coarse.png", "middle.png", "fine.png"]
    for path in paths:
        assert Image.open(path).size == (4 * CELL, 3 * CELL)  # corner + 3 A columns, header + 2 B rows
    coarse, middle = cells(paths[0]), cells(paths[1])
    want_a, want_b = expected(ckpt, [0, 1, 2], 0.7), expected(ckpt, [10, 11], 0.7)
    for grid in (coarse, middle):
        for a in range(3):
            assert_close_px(grid[0][a + 1], want_a[a])
        for b in range(2):
            assert_close_px(grid[b + 1][0], want_b[b])
    for b in range(2):
        for a in range(3):
            assert_close_px(coarse[b + 1][a + 1], want_b[b])
            assert_close_px(middle[b + 1][a + 1], want_a[a])


def test_mixing_bands_at_16(ckpt, tmp_path):
    """At 16x16 the middle band (layers 4-5) is in use: the mix differs from both sources."""
    paths = run(ckpt, tmp_path, "--figure", "mixing", "--seeds", "0", "--seeds-b", "1", "--res", "16")
    for path in paths[:2]:
        g = cells(path)
        assert not np.array_equal(g[1][1], g[0][1]) and not np.array_equal(g[1][1], g[1][0])
    fine = cells(paths[2])
    np.testing.assert_array_equal(fine[1][1], fine[0][1])  # no layers at 64x64 in a 16x16 generator


def test_noise_figures(ckpt, tmp_path):
    draws, layers = run(ckpt, tmp_path, "--figure", "noise", "--seeds", "0,1", "--noise-draws", "8",
                        "--noise-show", "3")
    assert draws.endswith("s_noise.png") and layers.endswith("s_noise_layers.png")
    assert Image.open(draws).size == (4 * CELL, 2 * CELL)
    assert Image.open(layers).size == (4 * CELL, 2 * CELL)
    d = cells(draws)
    assert not np.array_equal(d[0][0], d[0][1])  # noise draws differ
    std = d[0][3].astype(int)
    assert (std[..., 0] == std[..., 1]).all() and std.max() == 255 and std.min() < 255  # gray, scaled
    all_, none, fine, coarse = cells(layers)[0]
    assert not np.array_equal(all_, none)
    np.testing.assert_array_equal(fine, none)    # 8x8: no layer at 64x64 and up, so no noise at all
    np.testing.assert_array_equal(coarse, all_)  # every layer in use is coarse; same noise maps


def test_noise_std_matches_torch_std(ckpt):
    """The running-sum std over draws in batches equals torch.std over the same draws (1e-12)."""
    G, info = sg.load_generator(ckpt)
    ctx = sample.Context(G, info, sample.get_args(["--ckpt", ckpt, "--res", "16"]))
    w = G.map(sample.seeds_to_z([0], G.cfg.z_dim, "cpu"), 0.7)
    torch.manual_seed(1)
    shown, std = sample.noise_draws(G, w, ctx, draws=10, batch=3, keep=4)
    torch.manual_seed(1)
    x = torch.cat([sample.synthesize(G, w.expand(n, -1, -1), 16, 1.0, "random", 3) for n in (3, 3, 3, 1)])
    torch.testing.assert_close(std, x.double().std(0).mean(0, keepdim=True), rtol=0, atol=1e-12)
    assert torch.equal(shown, x[:4]) and float(std.min()) > 0


def test_noise_figure_restores_the_generator(ckpt, tmp_path):
    G, info = sg.load_generator(ckpt)
    before = [p.clone() for p in G.parameters()]
    ctx = sample.Context(G, info, sample.get_args(["--ckpt", ckpt, "--seeds", "0"]))
    with sample.noise_only_on(G, []):
        assert all(float(b.epi0.noise_weight.abs().sum()) == 0 for b in G.synthesis.blocks)
    assert all(torch.equal(a, b) for a, b in zip(before, G.parameters())) and ctx.res == 8


def test_truncation(ckpt, tmp_path):
    """At 8x8 all 4 layers in use lie inside the cutoff (8), so psi 0 gives w_avg's image for every
    seed; psi 1 is the untruncated image."""
    path, = run(ckpt, tmp_path, "--figure", "truncation", "--seeds", "0-2")
    assert path.endswith("s_truncation.png")
    assert Image.open(path).size == (len(sample.TRUNCATION_PSIS) * CELL, 3 * CELL)
    g = cells(path)
    col0 = sample.TRUNCATION_PSIS.index(0.0)
    for r in (1, 2):
        np.testing.assert_array_equal(g[r][col0], g[0][col0])
    want = expected(ckpt, [0, 1, 2], 1.0)
    for r in range(3):
        assert_close_px(g[r][0], want[r])
    assert not np.array_equal(g[0][0], g[1][0])


def test_interp_gif(ckpt, tmp_path):
    path, = run(ckpt, tmp_path, "--figure", "interp", "--seeds", "0-2", "--frames", "3", "--fps", "10")
    gif = Image.open(path)
    assert path.endswith("s_interp.gif") and gif.size == (CELL, CELL)
    assert gif.n_frames == 9 and gif.info["loop"] == 0 and gif.info["duration"] == 100


@pytest.mark.parametrize("seeds", ["5-2", "a", "1,,2", "", "-3", "0-99999999"])
def test_bad_seeds(ckpt, tmp_path, seeds, capsys):
    with pytest.raises(SystemExit, match="--seeds"):
        run(ckpt, tmp_path, "--seeds", seeds)


@pytest.mark.parametrize("flags", [["--psi", "nan"], ["--psi", "inf"], ["--batch", "0"],
                                   ["--nrow", "0"]])
def test_nonsense_numbers_are_refused(tmp_path, flags, capsys):
    """--psi nan wrote an all-black PNG and exited 0: now argparse's one-line error, exit status 2,
    before the checkpoint is read."""
    with pytest.raises(SystemExit) as e:
        sample.main(["--ckpt", str(tmp_path / "not-read.pt"), "--out", str(tmp_path / "s.png"), *flags])
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if ": error: " in x]
    assert e.value.code == 2 and len(errors) == 1 and f": error: {flags[0]} {flags[1]}: must be" in errors[0]
    assert not os.listdir(tmp_path)


def test_seed_parsing():
    assert sample.parse_seeds("0-3,9, 4") == [0, 1, 2, 3, 9, 4]
    assert sample.parse_seeds("7") == [7]


def test_bad_checkpoint_and_res(ckpt, tmp_path):
    with pytest.raises(SystemExit, match="--ckpt: checkpoint not found"):
        run(str(tmp_path / "missing.pt"), tmp_path)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(SystemExit, match="not a stylegan train.py checkpoint"):
        run(str(tmp_path / "foreign.pt"), tmp_path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(SystemExit, match="not a readable torch checkpoint"):
        run(str(tmp_path / "text.pt"), tmp_path)
    with pytest.raises(SystemExit, match="--res: res must be a power of two between 4 and 16"):
        run(ckpt, tmp_path, "--res", "32")
    with pytest.raises(SystemExit, match="--figure interp: give at least two seeds"):
        run(ckpt, tmp_path, "--figure", "interp", "--seeds", "3")


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        sample.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--figure" in text and "--individual" in text and "--seeds" in text
