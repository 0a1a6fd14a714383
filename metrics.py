"""Image-quality metrics for the generator: FID, KID, SWD and PPL, computed by this project's own code.

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to the 2048-d pool3
features of Inception-v3, the 2015-12-05 TensorFlow graph as ported to PyTorch by pytorch-fid:
    FID = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))
StyleGAN reports fid50k: 50,000 images of G_ema without truncation against the whole real set.
KID (Binkowski et al. 2018) is the unbiased MMD^2 of the same features under the kernel
k(x, y) = (x.y / d + 1)^3, averaged over subsets as StyleGAN2-ADA does. SWD (ProGAN, Karras et al.
2018, appendix D) is the sliced Wasserstein distance between 7x7 patches of Laplacian pyramid
levels; it needs no weights, so it runs anywhere. PPL (StyleGAN section 4.1) is the perceptual path
length: LPIPS(g(p(t)), g(p(t + 1e-4))) / 1e-4^2 along random paths p in Z (ppl_z*) or W (ppl_w*),
t uniform in [0, 1) (*full) or 0 (*end), averaged over 100,000 samples within the 1st-99th percentile.

    python metrics.py --ckpt runs/00000-ffhq-1024/ckpt.pt --data data/ffhq --metrics fid,kid,swd
    python metrics.py --ckpt RUN/ckpt.pt --metrics ppl_zfull,ppl_wfull --vgg16 VGG16.pth --lpips vgg.pth
    python metrics.py real_dir fake_dir              # like pytorch-fid: folders or .npz statistics
    python metrics.py --save-stats real_dir real.npz  # statistics in pytorch-fid's .npz format

Inception weights: --inception PATH or STYLEGAN_INCEPTION=PATH, either pytorch-fid's
pt_inception-2015-12-05-6726825d.pth or NVIDIA's TorchScript inception-2015-12-05.pt; with neither,
the pytorch-fid file is downloaded once into the torch hub cache. LPIPS weights (PPL) are never
downloaded: --vgg16 torchvision's vgg16-397923af.pth and --lpips the LPIPS package's v0.1 vgg.pth.
"""
import argparse
import contextlib
import functools
import glob
import hashlib
import json
import os
import re
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stylegan import to_uint8  # the official [-1, 1] -> uint8 of generated images

PT_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PT_FID_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PT_FID_FILE
PT_FID_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries its sha256 prefix
NV_FILE = "inception-2015-12-05.pt"
NV_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + NV_FILE
NV_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
PPL_METRICS = ("ppl_zfull", "ppl_wfull", "ppl_zend", "ppl_wend")
METRICS = ("fid", "kid", "swd") + PPL_METRICS

# -----------------------------------------------------------------------------
# Inception-v3, FID variant. Module names follow torchvision's Inception3 so the pytorch-fid state
# dict loads strictly. The TF graph differs from torchvision's net in three places, kept here:
# average pools ignore padded zeros, the last block max-pools, and the classifier has 1008 classes.


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x):  # TF's 'SAME' average pool divides by the real pixels, not by 9
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class Mixed(nn.Module):
    def chain(self, branch, x):  # the convs branch_1, branch_2, ... of one branch, in order
        i = 1
        while hasattr(self, f"{branch}_{i}"):
            x, i = getattr(self, f"{branch}_{i}")(x), i + 1
        return x


class InceptionA(Mixed):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = BasicConv2d(cin, 48, 1), BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.chain("branch5x5", x), self.chain("branch3x3dbl", x),
                          self.branch_pool(tf_avg_pool(x))], 1)


class InceptionB(Mixed):  # grid reduction 35 -> 17
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.chain("branch3x3dbl", x), F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(Mixed):  # 7x7 convolutions factorised into 1x7 and 7x1
    def __init__(self, cin, c7):
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2, self.branch7x7_3 = BasicConv2d(c7, c7, **row), BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2, self.branch7x7dbl_3 = BasicConv2d(c7, c7, **col), BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4, self.branch7x7dbl_5 = BasicConv2d(c7, c7, **col), BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.chain("branch7x7", x), self.chain("branch7x7dbl", x),
                          self.branch_pool(tf_avg_pool(x))], 1)


class InceptionD(Mixed):  # grid reduction 17 -> 8
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = BasicConv2d(cin, 192, 1), BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.chain("branch3x3", x), self.chain("branch7x7x3", x),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(Mixed):  # expanded filter bank; pool="max" in the TF graph's last block
    def __init__(self, cin, pool):
        super().__init__()
        row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = BasicConv2d(384, 384, **row), BasicConv2d(384, 384, **col)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **col)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3, bd = self.chain("branch3x3", x), self.chain("branch3x3dbl", x)  # each then splits in two
        p = F.max_pool2d(x, 3, stride=1, padding=1) if self.pool == "max" else tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd), self.branch_pool(p)], 1)


def fid_preprocess(x):
    """uint8 [N, 3, H, W] -> float [N, 3, 299, 299] in [-1, 1], exactly as pytorch-fid does."""
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"FID expects uint8 images [N, 3, H, W], got {x.dtype} {list(x.shape)}")
    x = F.interpolate(x.expand(-1, 3, -1, -1).float() / 255, size=(299, 299), mode="bilinear",
                      align_corners=False)
    return 2 * x - 1


class FIDInceptionV3(nn.Module):
    """uint8 images of any size -> [N, 2048] pool3 features. Random weights until loaded."""

    def __init__(self):
        super().__init__()
        self.tag = None  # names the weights in the statistics cache; None: never cached
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c = InceptionA(192, 32), InceptionA(256, 64)
        self.Mixed_5d, self.Mixed_6a = InceptionA(288, 64), InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, "avg"), InceptionE(2048, "max")
        self.fc = nn.Linear(2048, 1008)  # unused for FID; kept so the weights file loads strictly
        for m in self.modules():  # He init keeps random-weight features O(1) through 40+ layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x):  # [N, 3, H, W] uint8
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(fid_preprocess(x))))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, "Mixed_" + name)(x)
        return x.mean(dim=(2, 3)).float()  # [N, 2048]


class TorchScriptInception(nn.Module):
    """NVIDIA's TorchScript port: uint8 images of any size (it resizes inside) -> [N, 2048]."""

    def __init__(self, net):
        super().__init__()
        self.net, self.tag = net, None

    def forward(self, x):
        return self.net(x.expand(-1, 3, -1, -1), return_features=True).float()


def load_strict(net, state, source):
    """load_state_dict(strict=True), with an error that names what differs."""
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{source}: not a state dict of tensors")
    want, got = ({k: tuple(v.shape) for k, v in d.items()} for d in (net.state_dict(), state))
    missing, unexpected = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    shapes = [f"{k} {got[k]} != {want[k]}" for k in sorted(want.keys() & got.keys()) if got[k] != want[k]]
    if missing or unexpected or shapes:
        raise ValueError(f"{source} is not the FID Inception-v3: {len(missing)} missing tensors "
                         f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                         f"{len(shapes)} wrong shapes {shapes[:3]}")
    net.load_state_dict(state, strict=True)
    return net


def load_inception(path=None, device="cpu"):
    """The FID network from a weights file: `path`, else $STYLEGAN_INCEPTION, else pytorch-fid's
    file in the torch hub cache, downloaded there the first time."""
    path = path or os.environ.get("STYLEGAN_INCEPTION")
    if path is None:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", PT_FID_FILE)
        if not os.path.isfile(path):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                torch.hub.download_url_to_file(PT_FID_URL, path, hash_prefix=PT_FID_SHA256_PREFIX)
            except Exception as e:
                raise FileNotFoundError(
                    f"FID needs the Inception weights and none could be found or downloaded ({e}). On a "
                    f"machine with internet, download {PT_FID_URL} (or NVIDIA's {NV_URL}), then pass "
                    f"--inception PATH, set STYLEGAN_INCEPTION=PATH, or copy it to {path}") from e
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Inception weights file not found: {path}")
    name, digest = os.path.basename(path), hashlib.sha256(open(path, "rb").read()).hexdigest()
    if (name == PT_FID_FILE and not digest.startswith(PT_FID_SHA256_PREFIX)
            or name == NV_FILE and digest != NV_SHA256):
        raise ValueError(f"{path}: sha256 {digest} is not that of the standard {name}; the file is "
                         f"corrupt or holds other weights")
    try:  # a TorchScript archive holds code (constants.pkl, code/) that torch.jit.load runs
        with open(path, "rb") as f:
            scripted = zipfile.is_zipfile(f) and "constants.pkl" in str(zipfile.ZipFile(f).namelist())
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read Inception weights {path}: {e}") from e
    if scripted and digest != NV_SHA256:
        raise ValueError(f"{path} is TorchScript, whose code loading it would run; the only TorchScript "
                         f"accepted is NVIDIA's {NV_FILE} (sha256 {NV_SHA256}), and this file's sha256 is "
                         f"{digest}. Other weights: save them where you trust the file as a plain state dict "
                         f"with the tensor names of pytorch-fid's {PT_FID_FILE} (torch.save(net.state_dict(), "
                         f"'inception.pth')), which loads without running code, and pass that file")
    tag = ("nv_inception" if digest == NV_SHA256 else "pt_inception" if name == PT_FID_FILE
           else "custom-" + digest[:8])
    if tag.startswith("custom"):
        print(f"warning: {name} is not a standard FID Inception file; its FID is comparable with "
              f"published numbers only if it holds the standard weights", file=sys.stderr)
    try:
        if scripted:
            net = TorchScriptInception(torch.jit.load(path, map_location="cpu"))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises pickle, zip, EOF and runtime errors alike
        raise ValueError(f"cannot read Inception weights {path}: {e}") from e
    if not scripted:
        net = load_strict(FIDInceptionV3(), state, path)
    net.tag = tag
    return net.eval().requires_grad_(False).to(device)


# -----------------------------------------------------------------------------
# Statistics and distances



def feature_stats(features):
    """[N, D] features -> (mu [D], sigma [D, D]) in float64, the unbiased covariance of np.cov."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"statistics need at least 2 feature vectors, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def psd_factor(s, tol):
    """F [D, r] with F F^T = s: Cholesky with full pivoting, stopped once every diagonal entry of
    the remaining Schur complement is below tol, so r is the numerical rank (cost O(D^2 r))."""
    f, diag = np.zeros_like(s), np.diag(s).copy()
    for r in range(len(s)):
        p = int(np.argmax(diag))
        if diag[p] <= tol:
            return f[:, :r]
        f[:, r] = (s[:, p] - f[:, :r] @ f[p, :r]) / np.sqrt(diag[p])
        diag -= f[:, r] ** 2
    return f


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64, without scipy.

    For any factor S1 = F F^T, S1 S2 has the nonzero eigenvalues of the symmetric PSD F^T S2 F, so
    tr (S1 S2)^(1/2) is the sum of their square roots. F is LAPACK's Cholesky factor when S1 is
    positive definite (50k samples), else a rank-revealing pivoted Cholesky: square roots of the
    rounding noise in a few-sample covariance's null space would otherwise add up to an error.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"statistics do not match: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    eps = len(mu1) * np.finfo(np.float64).eps
    try:
        f = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:
        f = psd_factor(s1, eps * max(np.diag(s1).max(), 0))
    ev = np.linalg.eigvalsh(f.T @ s2 @ f) if f.shape[1] else np.zeros(1)
    tr_covmean = np.sqrt(ev[ev > eps * ev.max()]).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def kid(feats1, feats2, num_subsets=100, max_subset_size=1000, seed=0):
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, averaged over random subsets (StyleGAN2-ADA)."""
    x_all, y_all = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    d, m = x_all.shape[1], min(len(x_all), len(y_all), max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 feature vectors in each set")
    rng, t = np.random.default_rng(seed), 0.0
    for _ in range(num_subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m  # diagonals excluded: unbiased
    return float(t / num_subsets / m)


# SWD as ProGAN measures it: a Laplacian pyramid from the image resolution down to 16x16, 128 random
# 7x7 neighbourhoods per image and level, each descriptor set normalised per channel, then the sliced
# Wasserstein distance over 4 x 128 random directions, reported x 1e3 like ProGAN's tables.
SWD_IMAGES, SWD_NHOODS, SWD_NHOOD_SIZE = 16384, 128, 7


def binomial5(x, gain):  # [1 4 6 4 1]^2 / 256 blur with mirrored borders (scipy.ndimage 'mirror')
    k = torch.tensor([1.0, 4, 6, 4, 1], device=x.device)
    k = (torch.outer(k, k) * gain / 256).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(x, levels):
    """[N, C, H, W] float -> `levels` band-pass images, finest first; the coarsest is Gaussian."""
    pyr = [x]
    for _ in range(levels - 1):
        pyr.append(binomial5(pyr[-1], 1)[:, :, ::2, ::2])
        up = torch.zeros_like(pyr[-2])
        up[:, :, ::2, ::2] = pyr[-1]
        pyr[-2] = pyr[-2] - binomial5(up, 4)
    return pyr


def swd_levels(res):
    if res < SWD_NHOOD_SIZE + 1:
        raise ValueError(f"SWD needs images of at least 8x8, got {res}x{res}")
    return [r for r in (res >> i for i in range(12)) if r >= 16] or [res]


def swd_descriptors(images, generator=None):
    """uint8 [N, 3, H, W] -> {level resolution: [N * 128, 3, 7, 7] float16 neighbourhoods}. float16
    halves the memory of 16k images x 128 patches x 147 values a level; its rounding is far below the
    metric's sampling noise."""
    out, h, levels = {}, SWD_NHOOD_SIZE // 2, swd_levels(images.shape[-1])
    for r, level in zip(levels, laplacian_pyramid(images.float(), len(levels))):
        N, C, H, W = level.shape
        n = torch.arange(N, device=level.device).repeat_interleave(SWD_NHOODS)
        ys, xs = (torch.randint(h, s - h, (len(n),), generator=generator).to(level.device) for s in (H, W))
        patches = level.unfold(2, SWD_NHOOD_SIZE, 1).unfold(3, SWD_NHOOD_SIZE, 1)  # [N, C, H-6, W-6, 7, 7]
        out[r] = patches[n, :, ys - h, xs - h].half().cpu()
    return out


def sort_rows(p):  # numpy's CPU sort measured 20x faster than torch's (128 x 131k floats, one thread)
    return p.sort(dim=1)[0] if p.device.type != "cpu" else torch.from_numpy(np.sort(p.numpy(), axis=1))


def sliced_wasserstein(a, b, dir_repeats=4, dirs_per_repeat=128, seed=0):
    """Mean over random unit directions of the 1-D Wasserstein distance of the projected sets."""
    g = torch.Generator().manual_seed(seed)
    n = min(len(a), len(b))  # equal-size sets pair the sorted projections one to one
    a, b = (s[torch.randperm(len(s), generator=g)[:n]] if len(s) > n else s for s in (a, b))
    a, b = ((s - s.mean(dim=(0, 2, 3), keepdim=True)) / s.std(dim=(0, 2, 3), keepdim=True)
            for s in (a.float(), b.float()))
    a, b, dists = a.flatten(1), b.flatten(1), []
    for _ in range(dir_repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=g).to(a.device)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa, pb = (sort_rows(dirs.T @ s.T) for s in (a, b))  # [dirs, n]
        dists.append((pa - pb).abs().mean().item())
    return sum(dists) / len(dists)


def swd(desc1, desc2):
    """Per-level SWD x 1e3 as {"swd<res>": ...} plus their mean as "swd"."""
    if desc1.keys() != desc2.keys():
        raise ValueError(f"SWD needs both image sets at one resolution, got levels {list(desc1)} "
                         f"and {list(desc2)}")
    out = {f"swd{r}": 1e3 * sliced_wasserstein(desc1[r], desc2[r]) for r in desc1}
    return {**out, "swd": sum(out.values()) / len(out)}


# -----------------------------------------------------------------------------
# Perceptual path length (StyleGAN section 4.1 and appendix, official metrics/perceptual_path_length.py):
# the LPIPS distance between two images a step eps apart on a path through latent space, / eps^2.
# LPIPS (Zhang et al. 2018) with VGG16, as the LPIPS package's LPIPS(net="vgg") v0.1 computes it:
# relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 features, each unit-normalised along channels,
# squared differences weighted per channel by a learned 1x1 conv, averaged over space, summed.

PPL_EPSILON = 1e-4
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_TAPS = (3, 8, 15, 22, 29)  # relu1_2 .. relu5_3 in torchvision's vgg16().features
FACE_DATA = ("ffhq", "celeba", "builtin")  # dataset names that hold aligned faces: PPL crops to the face
LPIPS_HELP = ("PPL needs LPIPS weights and none are downloaded: pass --vgg16 PATH (torchvision's VGG16 "
              "state dict, vgg16-397923af.pth) and --lpips PATH (the LPIPS package's weights/v0.1/vgg.pth), "
              "or set STYLEGAN_VGG16 and STYLEGAN_LPIPS")


class LPIPS(nn.Module):
    """L(a, b) -> [N] distances between image pairs [N, 3, H, W] in [-1, 1]. Random weights until
    loaded; the VGG modules carry torchvision's names (features.<i>), so its state dict loads as is."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in VGG16_LAYERS:
            layers += [nn.MaxPool2d(2)] if v == "M" else [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = cin if v == "M" else v
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in (64, 128, 256, 512, 512)])
        # [-1, 1] -> ImageNet's normalisation: shift = 2 * mean - 1, scale = 2 * std (LPIPS ScalingLayer)
        for name, v in (("shift", [-0.030, -0.088, -0.188]), ("scale", [0.458, 0.448, 0.450])):
            self.register_buffer(name, torch.tensor(v).view(1, 3, 1, 1), persistent=False)

    def forward(self, a, b):
        if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
            raise ValueError(f"LPIPS expects two [N, 3, H, W] batches, got {list(a.shape)}, {list(b.shape)}")
        x, d = (torch.cat([a, b]) - self.shift) / self.scale, 0  # one VGG pass for both
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                f = x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)  # LPIPS normalize_tensor
                fa, fb = f.chunk(2)
                d = d + self.lins[LPIPS_TAPS.index(i)]((fa - fb).square()).mean(dim=(2, 3))
        return d[:, 0]


def lpips_state(state, source):
    """The tensors of a torchvision VGG16 state dict (features.<i>.*), of the LPIPS package's linear
    weights (lin<k>.model.1.weight) or of a whole LPIPS module (net.slice<j>.<i>.*, lin...), under
    LPIPS()'s names. Everything else (VGG's classifier) is left out."""
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{source}: not a state dict of tensors")
    out = {}
    for k, v in state.items():
        if m := re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", k):
            out[f"features.{m[1]}.{m[2]}"] = v
        elif m := re.fullmatch(r"lin(\d)\.model\.\d\.weight", k):
            out[f"lins.{m[1]}.weight"] = v
    return out


def load_lpips(vgg16_path=None, lin_path=None, device="cpu"):
    """LPIPS from files the user names (nothing is downloaded): torchvision's VGG16 state dict and the
    LPIPS package's vgg.pth linear weights, or one file holding both (an LPIPS module's state dict).
    Defaults: $STYLEGAN_VGG16 and $STYLEGAN_LPIPS."""
    vgg16_path = vgg16_path or os.environ.get("STYLEGAN_VGG16")
    lin_path = lin_path or os.environ.get("STYLEGAN_LPIPS")
    if not vgg16_path:
        raise FileNotFoundError(LPIPS_HELP)
    state = {}
    for path in [os.path.expanduser(str(p)) for p in (vgg16_path, lin_path) if p]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LPIPS weights file not found: {path}")
        if path.endswith(".pkl"):  # a TensorFlow network pickle: its variable names are not mapped yet
            raise ValueError(f"{path}: NVIDIA's vgg16_zhang_perceptual.pkl is not supported yet; use "
                             f"torchvision's vgg16-397923af.pth and the LPIPS package's weights/v0.1/vgg.pth")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle, zip, EOF and runtime errors alike
            raise ValueError(f"cannot read LPIPS weights {path}: {e}") from e
        state.update(lpips_state(loaded, path))
    net = LPIPS()
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(want.keys() - state.keys())
    if missing and all(k.startswith("lins.") for k in missing):
        raise ValueError(f"no LPIPS linear weights in {vgg16_path}: also pass the LPIPS package's "
                         f"weights/v0.1/vgg.pth (--lpips PATH or STYLEGAN_LPIPS)")
    shapes = [f"{k} {tuple(state[k].shape)} != {want[k]}" for k in sorted(want.keys() & state.keys())
              if tuple(state[k].shape) != want[k]]
    if missing or shapes:
        raise ValueError(f"{vgg16_path} is not torchvision's VGG16: {len(missing)} missing tensors "
                         f"{missing[:3]}, {len(shapes)} wrong shapes {shapes[:3]}")
    net.load_state_dict(state)
    return net.eval().requires_grad_(False).to(device)


@functools.lru_cache(maxsize=2)
def cached_lpips(vgg16_path, lin_path, device):
    return load_lpips(vgg16_path, lin_path, device)


def normalize(v):  # as the official code: no epsilon
    return v / v.square().sum(dim=-1, keepdim=True).sqrt()


def slerp(a, b, t):
    """Spherical interpolation between the directions of a and b [N, D] at t [N, 1]; unit vectors out."""
    a, b = normalize(a), normalize(b)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d)
    c = normalize(b - d * a)
    return normalize(a * torch.cos(p) + c * torch.sin(p))


def ppl_crop(img, crop):
    """The official preprocessing before LPIPS: the face region of an aligned face image (rows 3/8 to
    7/8, columns 2/8 to 6/8), then box-downsampled to 256 pixels if larger (VGG was built for 224)."""
    if crop:
        c = img.shape[2] // 8
        img = img[:, :, c * 3:c * 7, c * 2:c * 6]
    if img.shape[2] > 256:
        img = F.avg_pool2d(img, img.shape[2] // 256)
    return img


def path_distances(G, L, z, t, space, res, alpha=1.0, crop=True, eps=PPL_EPSILON):
    """z [2N, z_dim] (pairs z[0::2], z[1::2]) and t [N] -> [N] LPIPS(g(p(t)), g(p(t + eps))) / eps^2,
    where p slerps between the pair's z (space "z") or lerps between their w (space "w"), without
    truncation. Noise: G's const maps, the same for every image (redrawn per batch by ppl())."""
    t = t[:, None]
    if space == "w":
        w = G.map(z, track_w_avg=False)  # [2N, num_ws, w_dim]
        w0, w1 = w[0::2], w[1::2]
        ws = [w0 + (w1 - w0) * (t + e)[:, :, None] for e in (0, eps)]  # tflib.lerp's formula
    else:
        ws = [G.map(slerp(z[0::2], z[1::2], t + e), track_w_avg=False) for e in (0, eps)]
    img = ppl_crop(G.synthesis(torch.cat(ws), res, alpha, noise_mode="const"), crop)
    return L(*img.chunk(2)) / eps ** 2


def ppl_mean(d):
    """The official outlier filter: the mean of the distances between the 1st percentile (rounded
    down to a sample) and the 99th (rounded up)."""
    d = np.asarray(d, np.float64)
    lo, hi = np.percentile(d, 1, method="lower"), np.percentile(d, 99, method="higher")
    return float(d[(lo <= d) & (d <= hi)].mean())


def ppl(G, L, space="w", sampling="full", num=100000, res=None, alpha=1.0, crop=True, pairs=16,
        device="cpu", rank=0, world_size=1, seed=0, what=None):
    """Perceptual path length of G on rank 0 (None on the other ranks, which compute their share of
    the `num` samples). 'full' draws t uniform in [0, 1), 'end' takes t = 0. Per batch of `pairs`
    samples, from a torch.Generator seeded seed + rank: G's noise maps (restored afterwards), 2 *
    pairs latents, then t. In fp32 without TF32: the two images differ by eps."""
    if space not in ("z", "w") or sampling not in ("full", "end"):
        raise ValueError(f"PPL space must be 'z' or 'w' and sampling 'full' or 'end', got {space!r}, "
                         f"{sampling!r}")
    res = res or G.cfg.resolution
    if (res // 8 * 4 if crop else res) < 16:  # VGG pools 4 times
        raise ValueError(f"PPL needs 16x16 images after the crop, got {res}x{res} images (crop={crop})")
    share = num // world_size + (rank < num % world_size)
    g, out, t0 = torch.Generator().manual_seed(seed + rank), [], time.time()
    maps = [b for name, b in G.named_buffers() if name.endswith("noise_const")]
    saved = [m.clone() for m in maps]
    try:
        with torch.no_grad(), torch.autocast(torch.device(device).type, enabled=False), true_fp32():
            for i in range(0, share, pairs):
                n = min(pairs, share - i)
                for m in maps:  # the official code re-initialises its noise variables per minibatch
                    m.copy_(torch.randn(m.shape, generator=g))
                z = torch.randn(2 * n, G.cfg.z_dim, generator=g).to(device)
                t = (torch.rand(n, generator=g) * (sampling == "full")).to(device)
                out.append(path_distances(G, L, z, t, space, res, alpha, crop).cpu())
                if what:
                    progress(what, 2 * min((i + n) * world_size, num), 2 * num, t0)
    finally:
        for m, s in zip(maps, saved):
            m.copy_(s)
    d = gather(torch.cat(out) if out else torch.zeros(0), device, world_size)
    return None if rank else ppl_mean(d.numpy())


def is_face_data(dataset):
    """Unknown data (None) count as faces: the official code always crops."""
    return dataset is None or any(f in str(dataset.name).lower() for f in FACE_DATA)


def evaluate_ppl(G, names, dataset, num, res, alpha, lpips=None, crop=None, batch=32, device="cpu", rank=0,
                 world_size=1, seed=0, verbose=True):
    """{name: PPL, "ppl_num": num} on rank 0 for names in PPL_METRICS. lpips: a loaded LPIPS, a
    (vgg16_path, lin_path) pair or None ($STYLEGAN_VGG16, $STYLEGAN_LPIPS). crop None: the face crop
    when the dataset holds faces. G makes `batch` images (batch / 2 samples) at a time."""
    crop = is_face_data(dataset) if crop is None else crop
    if not names or (res // 8 * 4 if crop else res) < 16:  # skipped below 16x16 after the crop
        return {}
    L = lpips if isinstance(lpips, nn.Module) else cached_lpips(*(lpips or (None, None)), device)
    out = {}
    for name in names:
        what = verbose and rank == 0 and f"{name} at {res}x{res} (2 images a sample)"
        out[name] = ppl(G, L, name[4], name[5:], num, res, alpha, crop, max(batch // 2, 1), device, rank,
                        world_size, seed, what)
    return {**out, "ppl_num": num} if rank == 0 else {}


# -----------------------------------------------------------------------------
# Feature extraction over image sets, the real-statistics cache, and evaluate() for train.py


_last_progress = [0.0]  # when the last progress line went to a file or pipe


def progress(what, done, total, t0):
    """The rate and the ETA on stderr: one self-overwriting line on a terminal; in a file or a pipe,
    a plain line every 30 seconds and at the end (no carriage-return spinners in logs)."""
    dt, eta = time.time() - t0, int((time.time() - t0) / max(done, 1) * (total - done))
    text = f"{what}: {done}/{total} images, {done / max(dt, 1e-9):.1f} img/s, ETA {eta // 60}:{eta % 60:02d}"
    if sys.stderr.isatty():
        print("\r" + text, end="\n" if done >= total else "", file=sys.stderr, flush=True)
    elif done >= total or time.time() - max(_last_progress[0], t0) >= 30:
        print(text, file=sys.stderr, flush=True)
        _last_progress[0] = time.time()


@contextlib.contextmanager
def true_fp32():
    """No TF32 inside: PyTorch lets cuDNN convolutions use it by default, the TF reference did not."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def extract(batches, net=None, swd_max=0, device="cpu", bf16=False, what=None, total=0, scale=1, seed=0):
    """uint8 [B, 3, H, W] batches -> (Inception features [N, 2048] or None, SWD descriptors of the
    first swd_max images or None). A progress line if `what` is given; `scale` counts the other
    ranks, which process equal shares at the same pace."""
    feats, descs, g, done, t0 = [], [], torch.Generator().manual_seed(seed), 0, time.time()
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        for x in batches:
            x = x.to(device)
            if net is not None:
                with contextlib.nullcontext() if bf16 else true_fp32():
                    feats.append(net(x).float().cpu())
            if done < swd_max:
                descs.append(swd_descriptors(x[: swd_max - done], g))
            done += len(x)
            if what:
                progress(what, min(done * scale, total), total, t0)
    if len({tuple(d) for d in descs}) > 1:
        raise ValueError("SWD needs all images of a set at one size")
    descs = {r: torch.cat([d[r] for d in descs]) for r in descs[0]} if descs else None
    return (torch.cat(feats) if feats else None), descs


def dist_ready():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather(t, device, world_size):
    """Concatenate a tensor's rows from every rank (the row counts may differ by rank)."""
    import torch.distributed as dist
    if t is None or world_size == 1 or not dist_ready():
        return t
    x = t.to(device)
    ns = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size)]
    dist.all_gather(ns, torch.tensor([len(x)], device=device))
    x = torch.cat([x, x.new_zeros((int(max(ns)) - len(x), *x.shape[1:]))])  # all_gather: equal shapes
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x)
    return torch.cat([p[: int(n)] for p, n in zip(parts, ns)]).cpu()


def cache_path(cache_dir, name, res, count, tag):
    cache_dir = os.path.expanduser(cache_dir or os.environ.get("STYLEGAN_CACHE", "~/.cache/stylegan"))
    name = re.sub(r"[^\w.-]", "_", str(name))
    return os.path.join(cache_dir, f"{name}-{res}px-{count}-{tag}.npz")


def save_stats(path, mu, sigma, features=None):
    """pytorch-fid's .npz (mu, sigma), plus the features where KID needs them. Written to a temporary
    file first, so an interrupted write never leaves a truncated cache under the real name."""
    path = path if path.endswith(".npz") else path + ".npz"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    extra = {} if features is None else {"features": np.asarray(features, np.float32)}
    with open(path + ".tmp", "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, **extra)
    os.replace(path + ".tmp", path)
    return path


def load_stats(path):
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files if k in ("mu", "sigma", "features")}
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read statistics {path}: {e}") from e


def loader(dataset, res, indices, batch, workers):
    subset = torch.utils.data.Subset(dataset.at(res), list(indices))
    return torch.utils.data.DataLoader(subset, batch_size=batch, num_workers=workers)


def real_stats(dataset, res, net, need_features=False, cache_dir=None, batch=32, device="cpu", bf16=False,
               rank=0, world_size=1, workers=2, verbose=True):
    """mu, sigma (and features if asked) of every real image at `res`, on rank 0 ({} elsewhere).
    Cached by dataset name, resolution, image count and weights; read back on the next call."""
    path = cache_path(cache_dir, dataset.name, res, len(dataset), net.tag) if net.tag else None
    try:
        stats = load_stats(path) if path and os.path.isfile(path) else {}
    except ValueError as e:  # not readable: recompute and replace it
        print(f"{e}; recomputing", file=sys.stderr)
        stats = {}
    cached = "mu" in stats and "sigma" in stats and (not need_features or "features" in stats)
    if world_size > 1 and dist_ready():  # rank 0's cache decides: the others may see another disk
        flag = torch.tensor([float(cached)], device=device)
        torch.distributed.broadcast(flag, 0)
        cached = bool(flag.item())
    if cached:
        return stats if rank == 0 else {}
    what = verbose and rank == 0 and f"real images at {res}x{res}"
    f, _ = extract(loader(dataset, res, range(rank, len(dataset), world_size), batch, workers), net, 0,
                   device, bf16, what, len(dataset), world_size)
    f = gather(f, device, world_size)
    if rank != 0:
        return {}
    mu, sigma = feature_stats(f)
    if path:
        save_stats(path, mu, sigma, f if need_features else None)
        if verbose:
            print(f"cached real statistics in {path}", file=sys.stderr)
    return {"mu": mu, "sigma": sigma, "features": f.numpy()}


@functools.lru_cache(maxsize=2)
def cached_inception(path, device):  # the trainer evaluates every few kimg: read the weights once
    return load_inception(path, device)


def parse_metrics(metrics):
    metrics = set(metrics.split(",") if isinstance(metrics, str) else metrics) - {""}
    if not metrics or not metrics <= set(METRICS):
        raise ValueError(f"unknown metrics {sorted(metrics - set(METRICS))}; choose from {METRICS}")
    return metrics


def evaluate(G, dataset, metrics=("fid",), num=50000, res=None, alpha=1.0, psi=1.0, batch=32, device="cpu",
             rank=0, world_size=1, inception=None, cache_dir=None, bf16=False, seed=0, workers=2,
             verbose=True, lpips=None, crop=None, ppl_num=None):
    """Metrics of generator G against the whole `dataset` at resolution `res` (default: G's).

    Every rank generates its share of the `num` images; rank 0 returns the result as a dict
    ({"fid", "kid", "swd", "swd<res>"..., "num", "res", "seconds"}), the other ranks {}.
    `inception`: a weights path, a loaded network, or None for the default weights. SWD uses
    min(num, 16384) images (ProGAN) and is skipped below 8x8. PPL (ppl_zfull ...) takes ppl_num
    samples (default num) in fp32 without truncation and needs no dataset; see evaluate_ppl for
    `lpips` and `crop`.
    """
    if num < world_size:  # a rank with no images could not join the gather
        raise ValueError(f"num ({num}) must be at least the number of processes ({world_size})")
    metrics, res, t0, out = parse_metrics(metrics), res or G.cfg.resolution, time.time(), {}
    ppls = sorted(metrics & set(PPL_METRICS))
    metrics -= set(ppls) | ({"swd"} if res < 8 else set())
    net = None
    if metrics & {"fid", "kid"}:
        net = inception if isinstance(inception, nn.Module) else cached_inception(inception, device)
        reals = real_stats(dataset, res, net, "kid" in metrics, cache_dir, batch, device, bf16, rank,
                           world_size, workers, verbose)
    swd_num = min(num, len(dataset), SWD_IMAGES) if "swd" in metrics else 0
    if swd_num:  # a fixed random subset of the reals, shared out over the ranks
        idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:swd_num]
        batches = loader(dataset, res, idx[rank::world_size].tolist(), batch, workers)
        real_desc = extract(batches, None, swd_num, device, seed=seed + 1000 + rank)[1]
        real_desc = {r: gather(d, device, world_size) for r, d in real_desc.items()}

    g = torch.Generator().manual_seed(seed + rank)

    def generated(count):  # runs inside extract(), so under no_grad and the optional bf16 autocast
        for i in range(0, count, batch):
            z = torch.randn(min(batch, count - i), G.cfg.z_dim, generator=g).to(device)
            yield to_uint8(G(z, res=res, alpha=alpha, psi=psi, noise_mode="random"))

    def share(n):
        return n // world_size + (rank < n % world_size)

    what = verbose and rank == 0 and f"generated images at {res}x{res}"
    feats, fake_desc = extract(generated(share(num if net else swd_num)), net, share(swd_num), device, bf16,
                               what, num if net else swd_num, world_size, seed + rank)
    feats = gather(feats, device, world_size)
    fake_desc = {r: gather(d, device, world_size) for r, d in fake_desc.items()} if fake_desc else None
    out.update(evaluate_ppl(G, ppls, dataset, ppl_num or num, res, alpha, lpips, crop, batch, device, rank,
                            world_size, seed, verbose))
    if rank != 0:
        return {}
    if "fid" in metrics:
        out["fid"] = frechet_distance(*feature_stats(feats), reals["mu"], reals["sigma"])
    if "kid" in metrics:
        out["kid"] = kid(feats, reals["features"])
    if swd_num:
        out.update(swd(fake_desc, real_desc))
    return {**out, **({"num": num} if metrics else {}), "res": res, "seconds": round(time.time() - t0, 1)}


# -----------------------------------------------------------------------------
# Command line: a checkpoint against a dataset, or two image folders / .npz statistics


def list_images(folder):
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is neither an image folder nor a .npz statistics file")
    files = sorted(f for f in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                   if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise ValueError(f"no images ({' '.join(IMAGE_EXTS)}) found in {folder}")
    return files


def folder_batches(files, batch):
    """uint8 [B, 3, H, W] batches of RGB images; a batch ends early where the image size changes."""
    from PIL import Image
    group = []
    for path in files:
        try:
            with Image.open(path) as im:
                x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from e
        if group and (len(group) == batch or group[0].shape != x.shape):
            yield torch.stack(group)
            group = []
        group.append(x)
    yield torch.stack(group)


def path_inputs(path, net, metrics, args):
    """A folder or .npz -> (dict with mu, sigma, features; SWD descriptors or None)."""
    if path.endswith(".npz"):
        stats = load_stats(path)
        if "swd" in metrics or ("kid" in metrics and "features" not in stats):
            raise ValueError(f"{path} holds statistics only: KID needs features (--save-stats --metrics kid),"
                             f" SWD needs images")
        return stats, None
    files = list_images(path)
    f, desc = extract(folder_batches(files, args.batch), net, SWD_IMAGES if "swd" in metrics else 0,
                      args.device, args.bf16, not args.quiet and path, len(files))
    return {**(dict(zip(("mu", "sigma"), feature_stats(f))) if f is not None else {}), "features": f}, desc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", help="two image folders or .npz statistics files, as pytorch-fid")
    p.add_argument("--ckpt", help="train.py checkpoint: its G_ema at the resolution and alpha it reached; "
                   "or one of NVIDIA's pretrained .pkl files (their Gs)")
    p.add_argument("--data", help="the real dataset for --ckpt (any source data.py opens); none for PPL")
    p.add_argument("--metrics", default="fid", help=f"comma-separated: {', '.join(METRICS)}")
    p.add_argument("--num", type=int, help="generated images for FID/KID/SWD (default 50,000, the paper's "
                   "fid50k) and samples for PPL (default 100,000, the official count)")
    p.add_argument("--inception", help="FID weights (default: $STYLEGAN_INCEPTION, else torch hub's cache)")
    p.add_argument("--vgg16", help="PPL: torchvision's VGG16 state dict, vgg16-397923af.pth (default: "
                   "$STYLEGAN_VGG16)")
    p.add_argument("--lpips", help="PPL: the LPIPS package's linear weights, weights/v0.1/vgg.pth (default: "
                   "$STYLEGAN_LPIPS)")
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, help="PPL: crop to the face before "
                   "LPIPS, as the official code (default: when --data is ffhq, celeba, builtin or absent)")
    p.add_argument("--batch", type=int, default=32, help="images per batch")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (faster; fp32 for published numbers)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents, SWD patches and KID subsets")
    p.add_argument("--cache-dir", help="real statistics cache (default: $STYLEGAN_CACHE, ~/.cache/stylegan)")
    p.add_argument("--save-stats", action="store_true", help="write the first folder's statistics to path 2")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    try:
        metrics = parse_metrics(args.metrics)
        if args.ckpt:
            if not args.data and metrics - set(PPL_METRICS):
                raise ValueError("--ckpt needs --data, the real images to compare against")
            import data
            import stylegan
            G, info = stylegan.load_generator(args.ckpt, which="G_ema", device=args.device)
            ds = data.open_dataset(args.data) if args.data else None
            out = evaluate(G, ds, metrics, args.num or 50000, info["res"], info["alpha"], batch=args.batch,
                           device=args.device, inception=args.inception, cache_dir=args.cache_dir,
                           bf16=args.bf16, seed=args.seed, verbose=not args.quiet, crop=args.crop,
                           lpips=(args.vgg16, args.lpips), ppl_num=args.num or 100000)
            out = {"ckpt": args.ckpt, "data": ds and ds.name, **out}
        elif metrics & set(PPL_METRICS):
            raise ValueError("PPL measures a generator: give --ckpt")
        elif len(args.paths) != 2:
            raise ValueError("give --ckpt and --data, or exactly two folders / .npz files")
        elif args.save_stats:
            stats = path_inputs(args.paths[0], load_inception(args.inception, args.device), {"fid"}, args)[0]
            keep = stats["features"] if "kid" in metrics else None
            out = {"saved": save_stats(args.paths[1], stats["mu"], stats["sigma"], keep),
                   "images": len(stats["features"])}
        else:
            for q in args.paths:  # before the weights load, so a typo fails fast
                if not (os.path.isdir(q) or q.endswith(".npz") and os.path.isfile(q)):
                    raise ValueError(f"{q} is neither an image folder nor a .npz statistics file")
            net = load_inception(args.inception, args.device) if metrics & {"fid", "kid"} else None
            (s1, d1), (s2, d2) = (path_inputs(q, net, metrics, args) for q in args.paths)
            out = {}
            if "fid" in metrics:
                out["fid"] = frechet_distance(s1["mu"], s1["sigma"], s2["mu"], s2["sigma"])
            if "kid" in metrics:
                out["kid"] = kid(s1["features"], s2["features"], seed=args.seed)
            if "swd" in metrics:
                out.update(swd(d1, d2))
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"metrics.py: error: {e}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
