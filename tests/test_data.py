"""Tests for data.py: file decoding, folder/zip/tar/prepared equivalence, bad and empty inputs, the
built-in dataset, and the sharded, resumable loader. Run: python -m pytest -q tests/test_data.py"""
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data

ROOT = Path(__file__).resolve().parent.parent
CELEBA = ROOT.parent / "shared" / "data" / "celeba6000.tar"


def _save(path, img, fmt=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)


@pytest.fixture
def folder(tmp_path):
    """Six images of every kind data.py converts, in nested folders. The first in sorted order is
    64x96, so the folder's native resolution is 64."""
    rng = np.random.default_rng(0)

    def noise(*shape, mode=None):
        return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)

    root = tmp_path / "imgs"
    _save(root / "a_tall.png", noise(96, 64, 3))
    _save(root / "b_gray.png", noise(80, 80, mode="L"))
    _save(root / "sub" / "c_rgba.png", noise(64, 64, 4, mode="RGBA"))
    _save(root / "sub" / "d_photo.jpg", noise(72, 100, 3), quality=90)
    _save(root / "sub" / "deeper" / "e_lossless.webp", noise(64, 64, 3), lossless=True)
    _save(root / "f_palette.png", noise(70, 70, 3).quantize(16))
    (root / "notes.txt").write_text("not an image, ignored")
    (root / ".hidden.png").write_bytes(b"ignored: hidden")
    return root


def _zip(root, dst):
    with zipfile.ZipFile(dst, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(root).as_posix())
    return dst


def _stack(ds):
    return torch.stack([ds[i] for i in range(len(ds))])


def test_folder_zip_prepared_same_tensors(folder, tmp_path):
    src = data.open_dataset(folder)
    assert isinstance(src, data.FolderSource) and len(src) == 6 and src.resolution == 64 and src.name == "imgs"
    zsrc = data.open_dataset(_zip(folder, tmp_path / "imgs.zip"))
    assert isinstance(zsrc, data.ArchiveSource) and zsrc.names == src.names
    data.prepare(folder, tmp_path / "prep", 64, workers=1, log=lambda *a, **k: None)
    prep = data.open_dataset(tmp_path / "prep")
    assert isinstance(prep, data.PreparedSource) and len(prep) == 6 and prep.resolutions == [4, 8, 16, 32, 64]
    for res in (64, 16, 4):
        x = _stack(src.at(res))
        assert x.shape == (6, 3, res, res) and x.dtype == torch.uint8
        assert torch.equal(x, _stack(zsrc.at(res))), res  # exact: the same decode path
        assert torch.equal(x, _stack(prep.at(res))), res


def test_decode_reference(tmp_path):
    """Center crop, LANCZOS resize, gray -> RGB, alpha over white, and the 2x2 box levels, against
    values computed here by hand."""
    tall = np.zeros((128, 64, 3), np.uint8)
    tall[:32] = tall[96:] = (255, 0, 0)  # red bands cropped away
    tall[32:96] = (10, 20, 200)
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (0, 255, 0, 0)  # fully transparent left half -> white
    rgba[:, 32:] = (0, 100, 0, 255)
    gray = np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (64, 1))
    for name, arr, mode in (("a_tall.png", tall, "RGB"), ("b_rgba.png", rgba, "RGBA"),
                            ("c_gray.png", gray, "L")):
        _save(tmp_path / "d" / name, Image.fromarray(arr, mode))
    src = data.open_dataset(tmp_path / "d")
    assert src.resolution == 64
    x = src.at(64)
    assert (x[0].permute(1, 2, 0) == torch.tensor([10, 20, 200], dtype=torch.uint8)).all()
    assert (x[1][:, :, :32] == 255).all()
    assert (x[1][:, :, 32:] == torch.tensor([0, 100, 0]).view(3, 1, 1)).all()
    assert torch.equal(x[2], torch.from_numpy(np.stack([gray] * 3)))
    # level 32 is the rounded 2x2 mean of level 64: gray columns 4k, 4k+4 -> 4k+2
    assert torch.equal(src.at(32)[2][0, 0], torch.arange(32, dtype=torch.uint8) * 8 + 2)
    # 16-bit grayscale scales 0..65535 to 0..255; a palette's transparent index becomes white
    deep = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, "PNG")
    x16, _ = data.decode_image(buf.getvalue(), 64)
    assert np.array_equal(x16[1], np.floor(deep / 257.0 + 0.5).astype(np.uint8))
    pal = Image.fromarray(np.repeat([[0, 1]], 4, axis=0).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 0, 255])
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    xp, _ = data.decode_image(buf.getvalue(), 2)  # 4x2 -> center crop 2x2 -> [transparent, blue]
    assert xp[:, 0].T.tolist() == [[255, 255, 255], [0, 0, 255]]
    # a non-square image resized by LANCZOS equals PIL's own crop-then-resize
    ref = Image.fromarray(tall).crop((0, 32, 64, 96)).resize((16, 16), Image.Resampling.LANCZOS)
    x16, side = data.decode_image((tmp_path / "d" / "a_tall.png").read_bytes(), 16)
    assert side == 64 and np.array_equal(x16, np.asarray(ref).transpose(2, 0, 1))


def test_upsampling_warns(tmp_path):
    _save(tmp_path / "d" / "small.png", Image.new("RGB", (20, 24), (1, 2, 3)))
    src = data.open_dataset(tmp_path / "d")
    assert src.resolution == 16
    with pytest.warns(UserWarning, match="upsampled to 32"):
        x = src.at(32)[0]
    assert x.shape == (3, 32, 32) and (x == torch.tensor([1, 2, 3], dtype=torch.uint8).view(3, 1, 1)).all()


def test_corrupt_file_named_and_skipped(folder, tmp_path):
    good = (folder / "sub" / "d_photo.jpg").read_bytes()
    (folder / "sub" / "d_photo.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (folder / "zz_garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    src = data.open_dataset(folder)
    assert len(src) == 7
    i_bad = src.names.index("sub/d_photo.jpg")
    with pytest.raises(ValueError, match=r"d_photo\.jpg.*--skip-bad"):
        src.at(16)[i_bad]
    with pytest.raises(ValueError, match=r"zz_garbage\.png"):
        src.at(16)[6]

    skipping = data.open_dataset(folder, skip_bad=True)
    with pytest.warns(UserWarning, match="skipping"):
        x = skipping.at(16)[i_bad]
    assert torch.equal(x, src.at(16)[i_bad + 1]) and len(skipping.bad) == 1  # the next good file

    with pytest.raises(ValueError, match=r"d_photo\.jpg"):
        data.prepare(folder, tmp_path / "p1", 16, workers=1, log=lambda *a, **k: None)
    assert not (tmp_path / "p1").exists() and not list(tmp_path.glob("p1.tmp-*"))  # nothing half-written

    lines = []
    m = data.prepare(folder, tmp_path / "p2", 16, workers=1, skip_bad=True, log=lines.append)
    assert m["count"] == 5 and m["skipped"] == 2 and "skipped 2 undecodable" in lines[-1]
    prep = data.open_dataset(tmp_path / "p2")
    good_idx = [i for i in range(7) if i not in (i_bad, 6)]
    assert torch.equal(_stack(prep.at(16)), torch.stack([src.at(16)[i] for i in good_idx]))


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.open_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="empty string"):
        data.open_dataset("")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no PNG/JPEG/WebP images"):
        data.open_dataset(tmp_path / "empty")
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(ValueError, match="no PNG/JPEG/WebP images"):
        data.open_dataset(tmp_path / "e.zip")
    (tmp_path / "f.bin").write_bytes(b"1234")
    with pytest.raises(ValueError, match="neither a folder nor"):
        data.open_dataset(tmp_path / "f.bin")
    (tmp_path / "half").mkdir()
    np.save(tmp_path / "half" / "4x4.npy", np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="no manifest.json"):
        data.open_dataset(tmp_path / "half")


def test_prepare_refuses_overwrite_interrupt_bad_res(folder, tmp_path, monkeypatch):
    quiet = dict(workers=1, log=lambda *a, **k: None)
    data.prepare(folder, tmp_path / "p", 16, **quiet)
    with pytest.raises(ValueError, match="already exists.*--force"):
        data.prepare(folder, tmp_path / "p", 16, **quiet)
    data.prepare(folder, tmp_path / "p", 8, force=True, **quiet)
    assert data.open_dataset(tmp_path / "p").resolutions == [4, 8]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["imgs", "p"]  # no tmp or old folders left
    with pytest.raises(ValueError, match="power of two"):
        data.prepare(folder, tmp_path / "q", 48, **quiet)
    calls = []

    def interrupted(i):  # Ctrl-C after two images
        calls.append(i)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return data.BuiltinSource()._pyramid(i, 8), None

    monkeypatch.setattr(data, "_prepare_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.prepare("builtin", tmp_path / "q", 8, max_images=10, **quiet)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["imgs", "p"]
    with pytest.raises(ValueError, match="holds resolutions"):
        data.open_dataset(tmp_path / "p").at(16)


def test_default_source_and_data_name(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src, msg = data.default_source()
    assert src == data.BUILTIN and "python data.py --src" in msg and "--dst data/ffhq" in msg
    assert isinstance(data.open_dataset(), data.BuiltinSource)
    data.prepare(folder, Path("data/ffhq"), 8, workers=1, log=lambda *a, **k: None)
    assert data.default_source()[0] == "data/ffhq"
    assert isinstance(data.open_dataset(), data.PreparedSource) and data.open_dataset().name == "ffhq"
    assert data.open_dataset("ffhq").path == Path("data/ffhq")  # a bare name means data/<name>


def test_builtin_deterministic_and_varied():
    src = data.open_dataset("builtin")
    assert src.name == "builtin" and src.resolution == 1024 and len(src) == 100_000
    ds = src.at(32)
    x = torch.stack([ds[i] for i in range(16)]).float()
    assert torch.equal(x, torch.stack([data.BuiltinSource().at(32)[i] for i in range(16)]).float())
    diff = (x[:, None] - x[None]).abs().mean((2, 3, 4))  # [16, 16] mean abs difference of pairs
    assert diff[~torch.eye(16, dtype=torch.bool)].min() > 10, "two built-in images are nearly identical"
    assert x.std(0).mean() > 30  # pixels vary across images, not only between them
    assert not torch.equal(ds[0], data.BuiltinSource(seed=1).at(32)[0])
    # the same face at every resolution: 64 px box-averaged to 32 px is close to the 32 px render
    x64 = torch.from_numpy(data.box_pyramid(src.image(3, 64), 32)[-1]).float()
    assert (x64 - x[3]).abs().mean() < 6
    for res in (4, 1024):
        assert src.at(res)[7].shape == (3, res, res)
    with pytest.raises(ValueError, match="power of two"):
        src.at(48)


class _Indices(torch.utils.data.Dataset):  # item i is the tensor [i], so batches show the sampled indices
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([i])


def _take(it, k):
    return torch.cat([next(it).flatten() for _ in range(k)]).tolist()


def test_loader_order_shards_and_resume():
    n, seed = 10, 3
    seq = _take(data.make_loader(_Indices(n), 4, seed=seed, num_workers=0), 10)  # 40 samples, 4 epochs
    assert seq == _take(data.make_loader(_Indices(n), 4, seed=seed, num_workers=0), 10)
    epochs = [seq[k:k + n] for k in range(0, 40, n)]
    assert all(sorted(e) == list(range(n)) for e in epochs) and epochs[0] != epochs[1]
    assert seq != _take(data.make_loader(_Indices(n), 4, seed=seed + 1, num_workers=0), 10)
    # two ranks of batch 2: each global batch of 4 is rank 0's 2 then rank 1's 2, and disjoint in an epoch
    r0 = data.make_loader(_Indices(n), 2, rank=0, world_size=2, seed=seed, num_workers=0)
    r1 = data.make_loader(_Indices(n), 2, rank=1, world_size=2, seed=seed, num_workers=0)
    assert sum((_take(r0, 1) + _take(r1, 1) for _ in range(10)), []) == seq
    # resuming at start=k continues the sequence, for one rank and for two
    assert _take(data.make_loader(_Indices(n), 4, seed=seed, start=14, num_workers=0), 6) == seq[14:38]
    r0 = data.make_loader(_Indices(n), 3, rank=0, world_size=2, seed=seed, start=7, num_workers=0)
    r1 = data.make_loader(_Indices(n), 3, rank=1, world_size=2, seed=seed, start=7, num_workers=0)
    assert _take(r0, 1) + _take(r1, 1) + _take(r0, 1) == seq[7:16]
    # worker processes deliver the same sequence as the main process
    assert _take(data.make_loader(_Indices(n), 4, seed=seed, num_workers=1), 10) == seq


def test_loader_batches_and_speed(folder):
    it = data.make_loader(data.open_dataset(folder).at(16), 4, num_workers=0)
    x = next(it)
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8
    assert data.loader_speed(data.BuiltinSource().at(8), 16, seconds=0.3, num_workers=0) > 50


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    """The first 64 CelebA faces (178x218 JPEG) from ../shared/data, extracted to a folder."""
    if not CELEBA.is_file():
        pytest.skip(f"{CELEBA} not found (real faces are read from the shared data folder, never committed)")
    root = tmp_path_factory.mktemp("celeba") / "celeba"
    root.mkdir()
    with tarfile.open(CELEBA) as t:
        for m in [m for m in t.getmembers() if m.name.endswith(".jpg")][:64]:
            (root / Path(m.name).name).write_bytes(t.extractfile(m).read())
    return root


def test_celeba_prepare_and_load(celeba, tmp_path):
    src = data.open_dataset(celeba)
    assert len(src) == 64 and src.resolution == 128  # 178 px short side
    data.prepare(celeba, tmp_path / "celeba", 64, workers=2, log=lambda *a, **k: None)
    prep = data.open_dataset(tmp_path / "celeba")
    assert len(prep) == 64 and prep.resolution == 64
    for res in (64, 8):
        assert torch.equal(_stack(prep.at(res)), _stack(src.at(res)))
    x = next(data.make_loader(prep.at(64), 8, num_workers=0)).float()
    assert x.shape == (8, 3, 64, 64) and 40 < x.mean() < 200 and x.std() > 30  # real photos, not blank
    # the tar itself reads in place and holds the same first images (same sorted order)
    tar = data.open_dataset(CELEBA)
    assert len(tar) == 6000 and tar.name == "celeba6000"
    first = sorted(p.name for p in celeba.iterdir())[0]
    assert torch.equal(tar.at(32)[tar.names.index(f"img_align_celeba/{first}")], src.at(32)[0])


def test_cli_help_and_prepare(folder, tmp_path, capsys):
    out = subprocess.run([sys.executable, str(ROOT / "data.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--src" in out.stdout and "--skip-bad" in out.stdout
    data.main(["--src", str(folder), "--dst", str(tmp_path / "p"), "--res", "8", "--workers", "1"])
    printed = capsys.readouterr().out
    assert "wrote" in printed and "on disk" in printed and "6 images at 4..8" in printed
    with pytest.raises(SystemExit, match="data.py: data source .* does not exist"):
        data.main(["--src", str(tmp_path / "nope"), "--dst", str(tmp_path / "q")])
    with pytest.raises(SystemExit, match="already exists; pass --force"):
        data.main(["--src", str(folder), "--dst", str(tmp_path / "p")])
