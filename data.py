"""Datasets for StyleGAN: image folders and archives, prepared multi-resolution arrays, a built-in
procedural dataset, and a deterministic, resumable, sharded loader.

Every source is an `ImageSource`: `len(src)` images, a native `src.resolution`, and `src.at(res)`, a
torch Dataset of uint8 [3, res, res] RGB tensors. `open_dataset(source)` picks the kind:

    "builtin"                 procedural faces drawn with numpy: 100,000 virtual images, any resolution
    DIR with manifest.json    a dataset prepared by `python data.py` (one memory-mapped .npy per res)
    DIR, .zip or .tar         PNG/JPEG/WebP files, found recursively and decoded on the fly
    None                      data/ffhq when it has been prepared (nanoGPT's data/<name>), else builtin

How an image file becomes a [3, res, res] tensor, the same for folders, archives and preparation:
decode with Pillow, apply the EXIF orientation, convert to RGB (grayscale is replicated, alpha is
composited over white), center-crop to a square, resize to the source's top resolution with PIL's
LANCZOS filter, then halve with a 2x2 box average down to res, keeping the levels in float and
rounding each one to uint8, as ProGAN's dataset_tool.py builds its resolution levels. So a folder,
its zip and its prepared dataset give identical tensors at every resolution, and the low-res reals
of progressive growing are exact box averages of the high-res ones (ProGAN, Karras et al. 2017,
sec. 3 and fig. 2: reals are downscaled to the current resolution and blended during a fade-in).

Prepare a dataset once, so that low-resolution phases never decode full-size images:

    python data.py --src ~/ffhq/images1024x1024 --dst data/ffhq --res 1024
    python data.py --src ../shared/data/celeba6000.tar --dst data/celeba --res 64

The loader (`make_loader`) numbers samples globally, g = start, start+1, ...: epoch g // N reads the
permutation perm(seed, epoch) of range(N), a global batch is world_size * batch_size consecutive g's
and rank r takes its r-th slice. Ranks read disjoint shards, and a resumed run (start = images shown)
continues the exact sequence.
"""
import argparse
import colorsys
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

BUILTIN = "builtin"
DEFAULT_DIR = os.path.join("data", "ffhq")
FFHQ_HINT = "python data.py --src /path/to/ffhq/images1024x1024 --dst data/ffhq --res 1024"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")


class BadImageError(ValueError):
    """A file that Pillow cannot decode; the message names the file."""


def check_res(res):
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res < 4 or res & (res - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {res!r}")
    return int(res)


# -----------------------------------------------------------------------------
# Decoding and resizing image files

def decode_image(data, res, label="image"):
    """Encoded bytes -> (uint8 [3, res, res] RGB, side of the square crop it was resized from)."""
    try:
        img = Image.open(io.BytesIO(data))
        ImageOps.exif_transpose(img, in_place=True)  # camera JPEGs store rotation in EXIF
        if img.mode.startswith("I"):  # 16-bit grayscale PNG: scale 0..65535 to 0..255
            img = Image.fromarray(np.clip(np.asarray(img) / 257.0 + 0.5, 0, 255).astype(np.uint8))
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            img = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
        img = img.convert("RGB")
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError (truncated), SyntaxError...
        raise BadImageError(f"cannot decode image {label}: {e}") from None
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)  # center crop
    if w != h:  # crop first: resize(box=...) would let the filter read pixels outside the box
        img = img.crop(box)
    if s != res:  # LANCZOS: the sharpest of PIL's antialiased filters, little ringing on photos
        img = img.resize((res, res), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)), s


def box_pyramid(x, res_min=4):
    """uint8 [3, R, R] -> [x at R, R/2, ..., res_min]. Each level is the 2x2 box average of the float
    level above, rounded to uint8 only for storage (ProGAN's dataset_tool.py)."""
    levels, f = [np.ascontiguousarray(x)], x.astype(np.float32)
    while f.shape[-1] > res_min:
        f = (f[:, 0::2, 0::2] + f[:, 0::2, 1::2] + f[:, 1::2, 0::2] + f[:, 1::2, 1::2]) * 0.25
        levels.append(np.rint(f).astype(np.uint8))
    return levels


# -----------------------------------------------------------------------------
# Image sources

class ImagesAt(torch.utils.data.Dataset):
    """The images of a source at one resolution: item i is a uint8 tensor [3, res, res]."""

    def __init__(self, source, res):
        self.source, self.res = source, res

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return torch.from_numpy(self.source.image(int(i), self.res))


class ImageSource:
    """Base class: `name`, native `resolution`, `len()`, and `at(res)` -> torch Dataset."""
    name = "images"
    resolution = 1024

    def __len__(self):
        raise NotImplementedError

    def _image(self, i, res):  # uint8 [3, res, res]; raises BadImageError for an undecodable file
        raise NotImplementedError

    def image(self, i, res):
        return self._image(i, res)

    def _pyramid(self, i, res):  # [image at res, res/2, ..., 4], what `python data.py` stores
        return box_pyramid(self._image(i, res), 4)

    def at(self, res):
        return ImagesAt(self, check_res(res))

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {len(self)} images, {self.resolution}px)"


class FileSource(ImageSource):
    """Images stored as files (a folder or an archive). Native resolution: the largest power of two
    <= the short side of the first file (in sorted order); larger requests are upsampled with a
    warning. Files are decoded lazily, when the loader reads them: a bad one raises BadImageError
    naming it, or with skip_bad is replaced by the next good file and counted in `self.bad`."""

    def __init__(self, names, skip_bad):
        if not names:
            raise ValueError(f"no PNG/JPEG/WebP images found in {self.path}")
        self.names, self.skip_bad, self.bad, self._warned = names, skip_bad, set(), False
        for i in range(len(names)):  # the first decodable file sets the native resolution
            try:
                with Image.open(io.BytesIO(self._read(i))) as img:
                    side = min(img.size)
                break
            except Exception as e:
                if not skip_bad:
                    raise BadImageError(f"cannot decode image {self._label(i)}: {e}") from None
        else:
            raise ValueError(f"none of the {len(names)} image files in {self.path} can be decoded")
        if side < 4:
            raise ValueError(f"{self._label(i)} is {side} px on its short side; at least 4 is needed")
        self.resolution = 2 ** int(math.log2(side))

    def __len__(self):
        return len(self.names)

    def _label(self, i):
        return f"{self.path}:{self.names[i]}"

    def _top(self, i, res):  # the image at max(res, native): every lower level is box-averaged from it
        top = max(res, self.resolution)
        x, side = decode_image(self._read(i), top, self._label(i))
        if side < top and not self._warned:
            self._warned = True
            warnings.warn(f"{self._label(i)} is {side} px on its short side, upsampled to {top} "
                          f"(LANCZOS); images smaller than the training resolution look blurry")
        return x

    def _image(self, i, res):
        return box_pyramid(self._top(i, res), res)[-1]

    def _pyramid(self, i, res):  # the same float chain as _image, so prepared levels match exactly
        return [x for x in box_pyramid(self._top(i, res), 4) if x.shape[-1] <= res]

    def image(self, i, res):
        for k in range(len(self)):
            j = (i + k) % len(self)
            try:
                return self._image(j, res)
            except BadImageError as e:
                if not self.skip_bad:
                    raise BadImageError(f"{e} (skip such files with --skip-bad / skip_bad=True)") from None
                if j not in self.bad:
                    self.bad.add(j)
                    warnings.warn(f"skipping {self._label(j)}: undecodable ({len(self.bad)} so far)")
        raise ValueError(f"none of the image files in {self.path} can be decoded")


def _is_image_name(name):
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in name.replace("\\", "/").split("/"))
    return name.lower().endswith(IMAGE_EXTS) and not hidden


class FolderSource(FileSource):
    """All PNG/JPEG/WebP files under a folder, recursively, in sorted order of relative path."""

    def __init__(self, path, skip_bad=False):
        self.path, self.name = Path(path), Path(path).resolve().name
        names = []
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, path)
            names += [(Path(rel) / f).as_posix() for f in filenames if _is_image_name(f)]
        super().__init__(sorted(names), skip_bad)

    def _label(self, i):
        return str(self.path / self.names[i])

    def _read(self, i):
        return (self.path / self.names[i]).read_bytes()


class ArchiveSource(FileSource):
    """A .zip or an uncompressed .tar of images, read in place. Each process opens its own handle:
    one shared across fork would share its file position between loader workers."""

    def __init__(self, path, skip_bad=False):
        self.path, self.name, self._pid = Path(path), Path(path).name.split(".")[0], None
        if zipfile.is_zipfile(path):
            self.kind = "zip"
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if _is_image_name(n)]
        elif tarfile.is_tarfile(path):
            self.kind = "tar"
            try:
                with tarfile.open(path, "r:") as t:  # plain tar only: a compressed one has no random access
                    self.members = {m.name: (m.offset_data, m.size) for m in t
                                    if m.isfile() and _is_image_name(m.name)}
            except tarfile.ReadError:
                raise ValueError(f"{path} is a compressed tar; use an uncompressed .tar or a .zip") from None
            names = list(self.members)
        else:
            raise ValueError(f"{path} is neither a folder nor a .zip/.tar archive of images")
        super().__init__(sorted(names), skip_bad)

    def _read(self, i):
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._handle = zipfile.ZipFile(self.path) if self.kind == "zip" else open(self.path, "rb")
        if self.kind == "zip":
            return self._handle.read(self.names[i])
        offset, size = self.members[self.names[i]]
        self._handle.seek(offset)
        return self._handle.read(size)

    def __getstate__(self):  # open handles do not travel to spawned workers
        return {k: v for k, v in self.__dict__.items() if k != "_handle"} | {"_pid": None}


class PreparedSource(ImageSource):
    """A dataset written by `python data.py`: manifest.json plus `{r}x{r}.npy`, uint8 [N, 3, r, r],
    for r = 4..resolution, read with np.load(mmap_mode="r") so only the pages touched are loaded.
    Images are the first `count` rows; rows past it (files skipped by --skip-bad) are unused."""

    def __init__(self, path):
        self.path, self._arrays = Path(path), {}
        try:
            m = json.loads((self.path / "manifest.json").read_text())
            self.name, self.count = m["name"], int(m["count"])
            self.resolutions = [int(r) for r in m["resolutions"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}/manifest.json is not a manifest written by data.py ({e})") from None
        missing = [r for r in self.resolutions if not (self.path / f"{r}x{r}.npy").is_file()]
        if missing or self.count < 1:
            raise ValueError(f"prepared dataset {path} is incomplete: {self.count} images, "
                             f"missing levels {missing}")
        self.resolution = max(self.resolutions)

    def __len__(self):
        return self.count

    def array(self, res):
        if res not in self.resolutions:
            raise ValueError(f"{self.path} holds resolutions {self.resolutions}, not {res}; "
                             f"prepare it again with `python data.py --res {res}`")
        if res not in self._arrays:
            a = np.load(self.path / f"{res}x{res}.npy", mmap_mode="r")
            if a.shape[1:] != (3, res, res) or a.shape[0] < self.count or a.dtype != np.uint8:
                raise ValueError(f"{self.path}/{res}x{res}.npy is {a.dtype} {a.shape}, expected uint8 "
                                 f"{(self.count, 3, res, res)}")
            self._arrays[res] = a[:self.count]
        return self._arrays[res]

    def at(self, res):
        res = check_res(res)
        self.array(res)
        return ImagesAt(self, res)

    def _image(self, i, res):
        return np.array(self.array(res)[i])  # a writable copy out of the memory map

    def __getstate__(self):  # a pickled memmap would be a full copy; reopen it in the worker instead
        return {k: v for k, v in self.__dict__.items() if k != "_arrays"} | {"_arrays": {}}


# -----------------------------------------------------------------------------
# The built-in procedural dataset

def _hsv(h, s, v):  # -> float32 [3, 1, 1], ready to broadcast over [3, H, W]
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32).reshape(3, 1, 1)


def _cover(u, v, a, b, px):
    """Fraction of each pixel inside the ellipse (u/a)^2 + (v/b)^2 <= 1: a ramp about one pixel wide
    across the edge, which anti-aliases without supersampling."""
    d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return np.clip((1.0 - d) * (min(a, b) / px) + 0.5, 0.0, 1.0)


def _pattern(kind, u, v, freq, px, noise=None):
    """A texture in [0, 1] over coordinates (u, v): 0 stripes, 1 checks, 2 dots at `freq` cycles per
    unit, or 3 a smooth noise field. Where a period spans fewer than 4 pixels (px = pixel size) it
    fades to its mean, as a box filter would, so low resolutions show no aliasing."""
    if kind == 3:
        return noise
    mean = np.pi * 0.09 if kind == 2 else 0.5  # dots of radius 0.3 cover pi * 0.3^2 of a cell
    fade = min(max((0.5 - freq * px) / 0.25, 0.0), 1.0)
    if fade == 0.0:
        return np.full(np.broadcast_shapes(u.shape, v.shape), mean, np.float32)
    w = 2 * np.pi * freq
    if kind == 0:
        p = 0.5 + 0.5 * np.sin(w * u)
    elif kind == 1:
        p = 0.5 + 0.5 * np.clip(4.0 * np.sin(w * u) * np.sin(w * v), -1.0, 1.0)
    else:
        r = np.sqrt((u * freq % 1.0 - 0.5) ** 2 + (v * freq % 1.0 - 0.5) ** 2)
        p = np.clip((0.3 - r) / (freq * px) + 0.5, 0.0, 1.0)
    return mean + fade * (p - mean)


def _smooth_noise(grid, res):  # a coarse random grid, bicubic-upsampled: the same field at every res
    img = Image.fromarray(grid.astype(np.float32), "F").resize((res, res), Image.Resampling.BICUBIC)
    return np.asarray(img)


def render_face(rng, res):
    """A cartoon face, float32 [3, res, res] in [0, 1]. Coarse structure: head position, size and
    tilt, ears, hair line, eye and mouth placement. Fine structure: palette, and stripe, check, dot
    or noise textures on background, skin and hair. Every parameter is drawn before anything depends
    on res, so an index shows the same face at every resolution. Channels first: numpy broadcasts a
    [3, 1, 1] color over [H, W] planes several times faster than over a trailing axis of 3."""
    U = rng.uniform
    hue = rng.random()  # one base hue keeps each palette harmonious
    bg0 = _hsv(hue, U(0.25, 0.55), U(0.6, 0.95))
    bg1 = _hsv(hue + U(-0.25, 0.25), U(0.2, 0.6), U(0.35, 0.8))
    bg_angle, bg_rot, bg_kind = U(0, 2 * np.pi), U(0, np.pi), rng.integers(4)
    bg_freq, bg_amp = math.exp(U(1.0, 3.2)), U(0.06, 0.25)
    skin_hue = hue + 0.5 + U(-0.15, 0.15)
    skin = _hsv(skin_hue, U(0.2, 0.55), U(0.8, 1.0))
    skin2 = _hsv(skin_hue + U(-0.1, 0.1), U(0.4, 0.8), U(0.5, 0.8))
    head_kind, head_freq, head_amp = rng.integers(4), math.exp(U(0.7, 2.8)), U(0.15, 0.6)
    cx, cy, a, b_over_a, phi = U(-0.2, 0.2), U(-0.1, 0.15), U(0.34, 0.5), U(1.0, 1.25), U(-0.5, 0.5)
    hair = _hsv(rng.random(), U(0.3, 0.8), U(0.12, 0.6))
    hair_line, hair_wave, hair_freq = U(-0.75, -0.2), U(0.0, 0.15), U(1.5, 5.0)
    ear_r = U(0.15, 0.25) if rng.random() < 0.7 else 0.0
    eye_x, eye_y, eye_r, eye_k = U(0.28, 0.45), U(-0.3, -0.05), U(0.13, 0.22), U(0.6, 1.1)
    iris, gaze_x, gaze_y = _hsv(rng.random(), U(0.5, 0.9), U(0.3, 0.7)), U(-0.3, 0.3), U(-0.2, 0.2)
    mouth = _hsv(U(-0.05, 0.02), U(0.5, 0.8), U(0.35, 0.6))
    mouth_y, mouth_w, mouth_h, smile = U(0.35, 0.6), U(0.2, 0.45), U(0.08, 0.2), U(0.2, 0.9)
    grid_bg, grid_head = rng.random((6, 6)), rng.random((6, 6))

    px = 2.0 / res  # pixel size in image coordinates [-1, 1], y pointing down
    t = (np.arange(res, dtype=np.float32) + 0.5) * px - 1.0
    x, y = t[None, :], t[:, None]
    ramp = np.clip(0.5 + 0.5 * (x * math.cos(bg_angle) + y * math.sin(bg_angle)), 0.0, 1.0)
    img = bg0 + ramp * (bg1 - bg0)  # [3, res, res]
    bu, bv = x * math.cos(bg_rot) + y * math.sin(bg_rot), y * math.cos(bg_rot) - x * math.sin(bg_rot)
    noise = _smooth_noise(grid_bg, res) if bg_kind == 3 else None
    img *= 1.0 + 2.0 * bg_amp * (_pattern(bg_kind, bu, bv, bg_freq, px, noise) - 0.5)

    c, s, b = math.cos(phi), math.sin(phi), a * b_over_a

    def window(lx, ly, r):
        """The square of pixels around the disc of radius r at head-local point (lx, ly): its slices
        into img and the head-local coordinates (u, v) of its pixels. Drawing each part only in its
        window makes a 1024 px face several times cheaper than whole-image masks."""
        wx, wy = cx + lx * c - ly * s, cy + lx * s + ly * c
        x0, x1 = (min(max(int((w + 1.0) / px + k), 0), res) for w, k in ((wx - r, -2), (wx + r, 2)))
        y0, y1 = (min(max(int((w + 1.0) / px + k), 0), res) for w, k in ((wy - r, -2), (wy + r, 2)))
        xx, yy = x[:, x0:x1] - cx, y[y0:y1] - cy
        return (slice(y0, y1), slice(x0, x1)), xx * c + yy * s, yy * c - xx * s

    def paint(win, cov, color):  # alpha-composite a color (or a [3, h, w] color image) in a window
        view = img[:, win[0], win[1]]
        view += cov * (color - view)

    # Head, ears and hair in head-local coordinates: the head's tilt (pose) turns all of them.
    win, u, v = window(0.0, 0.0, max(1.06 * b, 0.97 * a + 0.05 * b + 1.4 * ear_r * a))
    if ear_r:
        paint(win, _cover(np.abs(u) - 0.97 * a, v + 0.05 * b, ear_r * a, 1.4 * ear_r * a, px), skin * 0.85)
    shade = 0.78 + 0.3 * np.sqrt(np.clip(1.0 - (u / a) ** 2 - (v / b) ** 2, 0.0, 1.0))  # a lit sphere
    noise = _smooth_noise(grid_head, res)[win] if head_kind == 3 else None
    texture = head_amp * _pattern(head_kind, u / a, v / a, head_freq, px / a, noise)
    paint(win, _cover(u, v, a, b, px), (skin + texture * (skin2 - skin)) * shade)
    line = (hair_line + hair_wave * np.sin((hair_freq * math.pi / a) * u)) * b
    strands = 0.85 + 0.3 * _pattern(0, u / a, v, 12.0, px / a)
    above_line = np.clip((line - v) / px + 0.5, 0.0, 1.0)
    paint(win, _cover(u, v, 1.06 * a, 1.06 * b, px) * above_line, hair * strands)
    # Eyes: |u| draws both at once, |u - gaze| moves both irises the same way.
    ex, ey, er = eye_x * a, eye_y * b, eye_r * a
    gx, gy = gaze_x * er, gaze_y * er * eye_k
    win, u, v = window(0.0, ey, ex + 1.2 * er)
    sclera = _cover(np.abs(u) - ex, v - ey, er, eye_k * er, px)
    paint(win, sclera, _hsv(0.15, 0.02, 0.96))
    iu, iv = np.abs(u - gx) - ex, v - ey - gy
    paint(win, sclera * _cover(iu, iv, 0.55 * er, 0.55 * er, px), iris)
    paint(win, sclera * _cover(iu, iv, 0.25 * er, 0.25 * er, px), _hsv(0.7, 0.4, 0.05))
    # Mouth: a crescent, one ellipse minus another shifted up by `smile`.
    mw, mh, my = mouth_w * a, mouth_h * b, mouth_y * b
    win, u, v = window(0.0, my, 1.1 * max(mw, mh))
    paint(win, _cover(u, v - my, mw, mh, px) * (1.0 - _cover(u, v - my + smile * mh, 1.1 * mw, mh, px)),
          mouth)
    return img


class BuiltinSource(ImageSource):
    """`count` procedural faces, image i drawn from the random generator seeded by (seed, i), at any
    power-of-two resolution, straight at that resolution (cheap at 8-32 px). Nothing is downloaded.
    Prepared with `python data.py --src builtin`, the levels below --res are box averages of the
    --res render, which differ slightly from rendering at each res."""

    def __init__(self, count=100_000, seed=0):
        self.name, self.resolution, self.count, self.seed = BUILTIN, 1024, count, seed

    def __len__(self):
        return self.count

    def _image(self, i, res):
        if not 0 <= i < self.count:
            raise IndexError(f"image {i} of {self.count}")
        img = render_face(np.random.default_rng([self.seed, i]), res)
        img = np.clip(img, 0.0, 1.0, out=img)
        img *= 255.0
        img += 0.5
        return img.astype(np.uint8)


# -----------------------------------------------------------------------------
# Opening a source

def default_source():
    """(source, one line for the user) used when no source is given: data/ffhq once prepared,
    otherwise the built-in dataset."""
    if os.path.isfile(os.path.join(DEFAULT_DIR, "manifest.json")):
        return DEFAULT_DIR, f"no --data: using the prepared dataset in {DEFAULT_DIR}"
    return BUILTIN, f"no --data: using the built-in procedural dataset; prepare FFHQ with: {FFHQ_HINT}"


def open_dataset(source=None, *, skip_bad=False):
    """A source name or path -> ImageSource (see the module docstring). Raises ValueError with a
    clear message for a missing, empty or unreadable source, before any training starts."""
    if source is None:
        source = default_source()[0]
    source = str(source)
    if source == BUILTIN:
        return BuiltinSource()
    if not source.strip():
        raise ValueError(f"the data source is an empty string; give a folder, a .zip/.tar, a prepared "
                         f"dataset or '{BUILTIN}'")
    path = Path(source).expanduser()
    if not path.exists() and os.sep not in source and (Path("data") / source / "manifest.json").is_file():
        path = Path("data") / source  # a bare name means data/<name>, as in nanoGPT
    if not path.exists():
        raise ValueError(f"data source {source!r} does not exist; give a folder or .zip/.tar of "
                         f"PNG/JPEG/WebP images, a dataset prepared by `python data.py`, or '{BUILTIN}'")
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return PreparedSource(path)
        if any(path.glob("*.npy")):
            raise ValueError(f"{path} has .npy arrays but no manifest.json: an unfinished `python data.py`? "
                             f"prepare it again")
        return FolderSource(path, skip_bad=skip_bad)
    return ArchiveSource(path, skip_bad=skip_bad)


# -----------------------------------------------------------------------------
# The loader

class ShardSampler(torch.utils.data.Sampler):
    """Infinite index stream of one rank. Global sample g = start, start+1, ... reads
    perm(seed, g // n)[g % n]; each global batch is world_size * batch_size consecutive g's, of which
    this rank takes slice `rank`. Consecutive batch_size indices from here are this rank's batches."""

    def __init__(self, n, batch_size, rank=0, world_size=1, seed=0, start=0):
        if n < 1 or batch_size < 1 or not 0 <= rank < world_size or start < 0:
            raise ValueError(f"bad loader settings: {n} images, batch {batch_size}, rank {rank} of "
                             f"{world_size}, start {start}")
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.start = seed, start

    def __iter__(self):
        first, epoch, perm = self.start + self.rank * self.batch_size, -1, None
        while True:
            for g in range(first, first + self.batch_size):
                if g // self.n != epoch:
                    epoch = g // self.n
                    perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
                yield int(perm[g % self.n])
            first += self.world_size * self.batch_size


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers():
    return max(0, min(4, _cpus() - 1))  # leave a core to the trainer; none spare on a 1-core machine


def _collate(images):  # np.stack: torch.stack's multi-threaded copy stalls on a busy small CPU
    return torch.from_numpy(np.stack([x.numpy() for x in images]))


def _worker_init(_):
    # Ctrl-C and SIGTERM reach the whole process group; the trainer handles them (finish the step,
    # write a checkpoint) and still needs its workers meanwhile. They exit with their parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset, batch_size, *, rank=0, world_size=1, seed=0, start=0, num_workers=None):
    """An infinite iterator of uint8 batches [batch_size, 3, res, res] for this rank (see
    ShardSampler). The sampler never ends, so the workers live as long as the iterator: nothing is
    respawned per epoch (what persistent_workers buys a finite loader)."""
    num_workers = default_workers() if num_workers is None else num_workers
    sampler = ShardSampler(len(dataset), batch_size, rank, world_size, seed, start)
    loader = torch.utils.data.DataLoader(dataset, batch_size, sampler=sampler, num_workers=num_workers,
                                         collate_fn=_collate, pin_memory=torch.cuda.is_available(),
                                         prefetch_factor=4 if num_workers else None,
                                         worker_init_fn=_worker_init)
    return iter(loader)


def close_loader(it):
    """Ends the workers of a make_loader iterator now (None: nothing to do). Left to the garbage
    collector, an iterator that an exception's traceback still holds outlives the trainer's code,
    and at exit multiprocessing then waits forever for workers that ignore SIGTERM (_worker_init)."""
    shutdown = getattr(it, "_shutdown_workers", None)  # what the iterator's own __del__ calls
    if shutdown is not None:
        shutdown()
    for w in getattr(it, "_workers", []):  # one still busy after the shutdown's join timeout
        if w.is_alive():
            w.kill()
            w.join()


def loader_speed(dataset, batch_size, seconds=3.0, num_workers=None):
    """Images per second that make_loader delivers from `dataset`, after one warm-up batch."""
    it = make_loader(dataset, batch_size, num_workers=num_workers)
    next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += next(it).shape[0]
    rate = n / (time.perf_counter() - t0)
    del it  # shuts the workers down
    return rate


# -----------------------------------------------------------------------------
# Preparing a multi-resolution dataset

_WORK = None  # (source, res) in each preparation worker


def _init_worker(source, res):
    global _WORK
    _WORK = (source, res)
    if multiprocessing.parent_process() is not None:  # a pool worker: the main process handles signals
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _prepare_one(i):
    source, res = _WORK
    try:
        return source._pyramid(i, res), None
    except BadImageError as e:
        return None, str(e)


def _fmt_time(s):
    return time.strftime("%H:%M:%S", time.gmtime(s))


def _fmt_bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1024


def prepare(src, dst, res=None, *, max_images=None, skip_bad=False, workers=None, force=False, log=print):
    """Write the multi-resolution dataset of `src` to `dst` (see the module docstring); returns the
    manifest. Writes into a temporary sibling folder renamed to dst at the end, so an interrupted
    preparation leaves no folder that looks complete."""
    t0, dst = time.time(), Path(dst)
    if dst.exists() and not force:
        raise ValueError(f"{dst} already exists; pass --force to replace it")
    source = open_dataset(src, skip_bad=skip_bad)
    res = check_res(source.resolution if res is None else res)
    n = len(source) if max_images is None else min(len(source), max_images)
    if n < 1:
        raise ValueError("--max-images must be at least 1")
    resolutions = [2 ** k for k in range(2, int(math.log2(res)) + 1)]
    need = sum(n * 3 * r * r for r in resolutions)
    dst.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dst.parent).free
    if need > free:
        raise ValueError(f"{n} images at 4..{res} need {_fmt_bytes(need)}; {dst.parent} has "
                         f"{_fmt_bytes(free)} free (try --max-images or a lower --res)")
    if res > source.resolution:
        log(f"warning: {source.name} is {source.resolution} px natively; images are upsampled to {res}")
    workers = min(8, _cpus()) if workers is None else max(1, workers)
    log(f"preparing {n} images of {source.name} at {resolutions[0]}..{res} ({_fmt_bytes(need)}) "
        f"into {dst} with {workers} worker(s)")

    tmp = Path(tempfile.mkdtemp(prefix=dst.name + ".tmp-", dir=dst.parent))
    try:
        arrays = {r: np.lib.format.open_memmap(tmp / f"{r}x{r}.npy", "w+", np.uint8, (n, 3, r, r))
                  for r in resolutions}
        bad, k, t_loop = [], 0, time.time()
        last = t_loop
        tty = sys.stdout.isatty()
        if workers > 1:
            pool = multiprocessing.Pool(workers, _init_worker, (source, res))
            results = pool.imap(_prepare_one, range(n), chunksize=4)
        else:
            pool = None
            _init_worker(source, res)
            results = map(_prepare_one, range(n))
        try:
            for i, (levels, err) in enumerate(results):
                if err is not None:
                    if not skip_bad:
                        raise BadImageError(f"{err} (skip such files with --skip-bad)")
                    bad.append(err)
                    continue
                for lvl in levels:
                    arrays[lvl.shape[-1]][k] = lvl
                k += 1
                now = time.time()
                if now - last > (0.5 if tty else 10.0) or i + 1 == n:
                    last, rate = now, (i + 1) / max(now - t_loop, 1e-9)
                    line = f"{i + 1}/{n} images  {rate:.0f} img/s  ETA {_fmt_time((n - i - 1) / rate)}"
                    if tty and log is print:  # one line rewritten in place
                        print(line, end="\r" if i + 1 < n else "\n", flush=True)
                    else:
                        log(line)
        finally:
            if pool is not None:
                pool.terminate()
        if k == 0:
            raise ValueError(f"none of the {n} images of {src} could be decoded")
        for a in arrays.values():
            a.flush()
        del arrays
        manifest = {"name": dst.name, "count": k, "resolutions": resolutions,
                    "files": {str(r): f"{r}x{r}.npy" for r in resolutions},
                    "layout": "uint8 [count, 3, r, r] RGB; rows past count are unused",
                    "source": str(Path(source.path).resolve()) if hasattr(source, "path") else str(src),
                    "resize": "center crop, PIL LANCZOS to max(res, native res), 2x2 box averages below",
                    "skipped": len(bad), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if dst.exists():  # --force: swap the new one in, then delete the old one
            old = dst.with_name(f"{dst.name}.old-{os.getpid()}")
            dst.rename(old)
            tmp.rename(dst)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in dst.iterdir())
    log(f"wrote {dst}: {k} images at {resolutions[0]}..{res}, {_fmt_bytes(size)} on disk, "
        f"in {_fmt_time(time.time() - t0)}" + (f"; skipped {len(bad)} undecodable file(s)" if bad else ""))
    return manifest


def main(argv=None):
    ap = argparse.ArgumentParser(description="Prepare a multi-resolution StyleGAN dataset: one uint8 "
                                 ".npy per resolution 4..res plus manifest.json, for `train.py --data DST`.")
    ap.add_argument("--src", required=True, help="image folder (recursive), .zip or .tar of PNG/JPEG/WebP, "
                    f"a prepared dataset, or '{BUILTIN}' for the procedural dataset")
    ap.add_argument("--dst", required=True, help="output folder, e.g. data/ffhq (train.py's default data)")
    ap.add_argument("--res", type=int, default=None, help="top resolution, a power of two (default: the "
                    "source's native one, the largest power of two <= the first image's short side)")
    ap.add_argument("--max-images", type=int, default=None, help="use only the first N images (sorted by "
                    "path)")
    ap.add_argument("--skip-bad", action="store_true", help="skip files that cannot be decoded, and count "
                    "them, instead of stopping at the first")
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: the CPU "
                    "cores, up to 8)")
    ap.add_argument("--force", action="store_true", help="replace DST if it exists")
    args = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the temporary folder is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"data.py: terminated; {args.dst} was not written"))
    try:
        prepare(args.src, args.dst, args.res, max_images=args.max_images, skip_bad=args.skip_bad,
                workers=args.workers, force=args.force)
    except ValueError as e:
        raise SystemExit(f"data.py: {e}")
    except KeyboardInterrupt:
        raise SystemExit(f"data.py: interrupted; {args.dst} was not written")


if __name__ == "__main__":
    main()
