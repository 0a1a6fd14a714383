"""Images and the paper's figures from a train.py checkpoint alone, or from one of NVIDIA's
pretrained .pkl files (Karras et al. 2018, arXiv 1812.04948): sample grids, style mixing
(figure 3), stochastic variation (figures 4 and 5), the truncation trick (figure 8) and a walk
through W. --export-official writes a checkpoint in the official pickle format.

    python sample.py --ckpt runs/00000-ffhq-1024/ckpt.pt --seeds 0-63 --psi 0.7 --out samples.png
    python sample.py --ckpt RUN/ckpt.pt --seeds 0-7 --individual          # samples/seed0000.png ...
    python sample.py --ckpt RUN/ckpt.pt --figure mixing --seeds 0-4 --seeds-b 10-15
    python sample.py --ckpt RUN/ckpt.pt --figure noise | truncation | interp
    python sample.py --ckpt karras2019stylegan-ffhq-1024x1024.pkl --seeds 0-7   # NVIDIA's networks
    python sample.py --ckpt RUN/ckpt.pt --export-official out.pkl [--build-src networks_stylegan.py]

z for seed s is np.random.RandomState(s).randn(z_dim), the official scripts' convention. The EMA
generator is used (--which G for the raw one), at the resolution and fade-in alpha the run had
reached unless --res says otherwise. Noise is the fixed per-layer maps ("const") unless
--noise-mode random, so a seed always gives the same image. Figures enlarge images below 64x64
(nearest) so that they stay visible; --individual PNGs are the exact generator outputs.
"""
import argparse
import contextlib
import math
import os

import numpy as np
import torch
from PIL import Image

import kernels
import stylegan as sg
from train import save_grid

TRUNCATION_PSIS = (1.0, 0.7, 0.5, 0.0, -0.5)  # columns of the truncation figure (paper figure 8)
# Layer i of ws drives resolution 2**(i // 2 + 2). Style mixing crossovers of paper figure 3:
CROSSOVERS = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, 2 ** 30)}
# Noise figure 5 splits the layers at 32x32: coarse = 4..32, fine = 64 and up.
# Columns of the second noise figure, as resolution ranges of the layers that keep their noise:
# all layers | none | fine only (64 and up) | coarse only (4..32).
NOISE_COLUMNS = ((4, 2 ** 30), (0, 0), (64, 2 ** 30), (4, 32))
MIN_CELL = 64
MAX_SEED = 2 ** 32 - 1  # np.random.RandomState accepts seeds in [0, 2**32)


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--ckpt", required=True, help="train.py checkpoint (RUN/ckpt.pt, a snapshot-*.pt or best.pt) or "
      "one of NVIDIA's pretrained networks (karras2019stylegan-*.pkl, read without running its code)")
    a("--seeds", default="0-7", help="seeds: a range '0-63', a list '1,5,9', one '3', or a mix '0-3,9'")
    a("--psi", type=float, default=0.7, help="truncation psi (paper section 2; 1 = no truncation). "
      "Applies to every figure but truncation, which shows its own psi values")
    a("--out", default="samples.png", help="output PNG; figures add a suffix (samples_mixing_coarse.png, "
      "samples_interp.gif ...); --individual writes into the folder of this name without .png")
    a("--individual", action="store_true", help="one PNG per seed instead of a grid")
    a("--figure", choices=["mixing", "noise", "truncation", "interp"], default=None,
      help="mixing: source A row x source B column at coarse/middle/fine crossovers (figure 3); "
      "noise: noise draws and per-pixel std (figure 4), noise on all/no/fine/coarse layers (figure 5); "
      f"truncation: each seed at psi {', '.join(map(str, TRUNCATION_PSIS))} (figure 8); "
      "interp: a looping GIF through W between the seeds")
    a("--seeds-b", default=None, help="--figure mixing: the source B seeds (column); default: as "
      "many seeds as A, numbered after the last A seed")
    a("--noise-draws", type=int, default=100, help="--figure noise: noise realisations the std image "
      "is computed over (paper figure 4: 100)")
    a("--noise-show", type=int, default=4, help="--figure noise: draws shown beside the std image")
    a("--frames", type=int, default=24, help="--figure interp: frames from one seed to the next")
    a("--fps", type=float, default=24, help="--figure interp: GIF frames per second")
    a("--which", choices=["G_ema", "G"], default="G_ema", help="EMA generator (as the paper) or the raw one")
    a("--res", type=int, default=None, help="output resolution (default: the run's current resolution)")
    a("--noise-mode", choices=sg.NOISE_MODES, default="const", help="per-layer noise: fixed maps "
      "(const), fresh draws (random, reproducible per run), or none")
    a("--nrow", type=int, default=8, help="images per row of a plain grid")
    a("--batch", type=int, default=8, help="images generated at once (memory at high resolution)")
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    a("--export-official", metavar="OUT.pkl", default=None, help="instead of images: write --ckpt (a full "
      "ckpt.pt with G, D and G_ema) as an official-format TensorFlow pickle; --ckpt OUT.pkl reads it back")
    a("--build-src", default=None, help="--export-official: your copy of the official "
      "training/networks_stylegan.py, stored as the code TensorFlow runs to rebuild the networks; without "
      "it a placeholder that only loaders reading the variables accept")
    a("--impl", choices=["auto", "triton", "ref"], default="auto",
      help="fused kernels (kernels.py) or the plain PyTorch references")
    args = p.parse_args(argv)
    if not math.isfinite(args.psi):  # nan made every image black, and the run still "succeeded"
        p.error(f"--psi {args.psi}: must be a finite number (1 = no truncation, 0 = the average face)")
    for flag in ("batch", "nrow"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} {getattr(args, flag)}: must be >= 1")
    return args


def parse_seeds(text):
    """'0-63' | '1,5,9' | '3' | '0-3,9' -> [int]; SystemExit with the offending part otherwise."""
    seeds = []
    for part in str(text).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            lo, hi = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise SystemExit(f"--seeds: cannot parse {part!r} in {text!r}; use '0-63', '1,5,9' or '3'") from None
        if not 0 <= lo <= hi <= MAX_SEED:
            raise SystemExit(f"--seeds: {part!r} is not a range lo-hi with 0 <= lo <= hi <= {MAX_SEED}")
        if hi - lo >= 100_000:
            raise SystemExit(f"--seeds: {part!r} asks for {hi - lo + 1:,} images; give at most 100,000")
        seeds.extend(range(lo, hi + 1))
    return seeds


def seeds_to_z(seeds, z_dim, device):
    """The official convention: z = RandomState(seed).randn(z_dim). [len(seeds), z_dim] fp32."""
    z = np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])
    return torch.from_numpy(z).float().to(device)


# ----------------------------------------------------------------------------------------------
# Generation

def layers_between(lo, hi, num_ws):
    """Indices of the ws layers that drive resolutions lo..hi."""
    return [i for i in range(num_ws) if lo <= 2 ** (i // 2 + 2) <= hi]


@torch.no_grad()
def synthesize(G, ws, res, alpha, noise_mode, batch):
    """ws [N, num_ws, w_dim] -> images [N, 3, res, res] on the CPU, `batch` at a time."""
    return torch.cat([G.synthesis(w, res, alpha, noise_mode).float().cpu() for w in ws.split(batch)])


@contextlib.contextmanager
def noise_only_on(G, layers):
    """Noise inputs only in the given layers: the others' learned noise strength is zeroed for the
    duration (the paper's figure 5). G itself is restored afterwards."""
    epilogues = [e for block in G.synthesis.blocks for e in (block.epi0, block.epi1)]
    saved = [e.noise_weight.detach().clone() for e in epilogues]
    try:
        with torch.no_grad():
            for i, e in enumerate(epilogues):
                if i not in layers:
                    e.noise_weight.zero_()
        yield
    finally:
        with torch.no_grad():
            for e, w in zip(epilogues, saved):
                e.noise_weight.copy_(w)


def to_pil(image, min_cell=MIN_CELL):
    """One [3, H, W] image in [-1, 1] -> PIL RGB, enlarged (nearest) to at least min_cell pixels."""
    x = sg.to_uint8(image).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(x)
    factor = max(1, min_cell // img.width)
    return img.resize((img.width * factor, img.height * factor), Image.NEAREST) if factor > 1 else img


def out_path(args, suffix, ext=".png"):
    base = os.path.splitext(args.out)[0]
    path = f"{base}_{suffix}{ext}" if suffix else f"{base}{ext}"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return path


def cell_size(res):
    return res * max(1, MIN_CELL // res)


# ----------------------------------------------------------------------------------------------
# Outputs: each returns the paths it wrote and prints one line per file.

def plain(G, ctx, args):
    ws = G.map(seeds_to_z(ctx.seeds, G.cfg.z_dim, ctx.device), args.psi)
    images = synthesize(G, ws, ctx.res, ctx.alpha, args.noise_mode, args.batch)
    what = f"seeds {args.seeds}, psi {args.psi}, {ctx.describe}"
    if not args.individual:
        path = out_path(args, "")
        save_grid(images, path, nrow=args.nrow, min_cell=MIN_CELL)
        print(f"wrote {path}: {len(images)} images of {ctx.res}x{ctx.res} in rows of {args.nrow} ({what})")
        return [path]
    folder = os.path.splitext(args.out)[0]
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"seed{s:04d}.png") for s in ctx.seeds]
    for image, path in zip(images, paths):
        save_grid(image[None], path, nrow=1, min_cell=1)  # exact output, no enlargement
    print(f"wrote {len(paths)} PNGs of {ctx.res}x{ctx.res} to {folder}/ (seed0000.png style names; {what})")
    return paths


def figure_mixing(G, ctx, args):
    """Paper figure 3: cell (b, a) is source A's image with source B's styles in one layer band."""
    seeds_a = ctx.seeds
    seeds_b = parse_seeds(args.seeds_b) if args.seeds_b else \
        list(range(seeds_a[-1] + 1, seeds_a[-1] + 1 + len(seeds_a)))
    ws_a = G.map(seeds_to_z(seeds_a, G.cfg.z_dim, ctx.device), args.psi)
    ws_b = G.map(seeds_to_z(seeds_b, G.cfg.z_dim, ctx.device), args.psi)
    img_a = synthesize(G, ws_a, ctx.res, ctx.alpha, args.noise_mode, args.batch)
    img_b = synthesize(G, ws_b, ctx.res, ctx.alpha, args.noise_mode, args.batch)
    blank = torch.ones_like(img_a[:1])  # white top-left corner
    num_ws, used = G.cfg.num_ws, ctx.layers_in_use
    paths = []
    for name, (lo, hi) in CROSSOVERS.items():
        layers = layers_between(lo, hi, num_ws)
        rows = [torch.cat([blank, img_a])]
        for j in range(len(seeds_b)):
            ws = ws_a.clone()
            ws[:, layers] = ws_b[j:j + 1, layers]
            rows.append(torch.cat([img_b[j:j + 1], synthesize(G, ws, ctx.res, ctx.alpha, args.noise_mode,
                                                               args.batch)]))
        path = out_path(args, f"mixing_{name}")
        save_grid(torch.cat(rows), path, nrow=len(seeds_a) + 1, min_cell=MIN_CELL)
        span = f"{lo}x{lo}-{hi}x{hi}" if hi < 2 ** 30 else f"{lo}x{lo} and up"
        which = f"ws layers {layers[0]}-{layers[-1]}" if layers else "no such layers in this generator"
        note = "" if any(i < used for i in layers) else \
            f"; no layer of this band is used at {ctx.res}x{ctx.res}, so the grid repeats source A"
        print(f"wrote {path}: source A seeds {seeds_a} (top row) with source B seeds {seeds_b} (left "
              f"column) replacing the {name} styles ({span}, {which}){note}")
        paths.append(path)
    return paths


def noise_draws(G, w, ctx, draws, batch, keep):
    """One w [1, num_ws, w_dim] under `draws` noise realisations: the first `keep` images and the
    per-pixel standard deviation averaged over RGB [1, H, W]. Running float64 sums keep 100 draws
    at 1024x1024 within a few hundred MB."""
    s1 = s2 = 0.0
    shown = []
    for start in range(0, draws, batch):
        x = synthesize(G, w.expand(min(batch, draws - start), -1, -1), ctx.res, ctx.alpha, "random", batch)
        shown.extend(x[:keep - len(shown)])
        x = x.double()
        s1, s2 = s1 + x.sum(0), s2 + x.square().sum(0)
    var = (s2 - s1.square() / draws) / (draws - 1)  # unbiased, as torch.std
    return torch.stack(shown), var.clamp(min=0).sqrt().mean(0, keepdim=True)


def figure_noise(G, ctx, args):
    """Paper figure 4: one w under several noise draws and the per-pixel std over many draws;
    figure 5: noise on all layers, on none, only on fine (64+), only on coarse (4-32) layers."""
    if not G.cfg.use_noise:
        raise SystemExit("--figure noise: this checkpoint was trained without noise inputs (--no-noise)")
    if not 1 <= args.noise_show <= args.noise_draws or args.noise_draws < 2:
        raise SystemExit("--figure noise: needs --noise-draws >= 2 and 1 <= --noise-show <= --noise-draws")
    ws = G.map(seeds_to_z(ctx.seeds, G.cfg.z_dim, ctx.device), args.psi)
    draws, layer_rows, max_std = [], [], []
    for k, seed in enumerate(ctx.seeds):
        torch.manual_seed(seed)
        shown, std = noise_draws(G, ws[k:k + 1], ctx, args.noise_draws, args.batch, args.noise_show)
        max_std.append(float(std.max()))
        std_image = (std / std.max().clamp(min=1e-12) * 2 - 1).expand(3, -1, -1).float()
        draws.append(torch.cat([shown, std_image[None]]))
        row = []
        for lo, hi in NOISE_COLUMNS:
            torch.manual_seed(seed)  # the same noise maps wherever noise is applied
            with noise_only_on(G, layers_between(lo, hi, G.cfg.num_ws)):
                row.append(synthesize(G, ws[k:k + 1], ctx.res, ctx.alpha, "random", args.batch))
        layer_rows.append(torch.cat(row))
    path_draws, path_layers = out_path(args, "noise"), out_path(args, "noise_layers")
    save_grid(torch.cat(draws), path_draws, nrow=args.noise_show + 1, min_cell=MIN_CELL)
    save_grid(torch.cat(layer_rows), path_layers, nrow=4, min_cell=MIN_CELL)
    print(f"wrote {path_draws}: per seed of {ctx.seeds}, {args.noise_show} noise draws, then the per-pixel "
          f"std over {args.noise_draws} draws (white = the largest, std "
          f"{', '.join(f'{s:.3g}' for s in max_std)}) ({ctx.where}, psi {args.psi})")
    print(f"wrote {path_layers}: per seed, noise on all layers | none | fine only (64x64 and up) | "
          f"coarse only (4x4-32x32)")
    return [path_draws, path_layers]


def figure_truncation(G, ctx, args):
    """Paper figure 8: rows are seeds, columns psi = 1, 0.7, 0.5, 0, -0.5 (psi 0 is the mean face
    w_avg in every truncated layer; negative psi gives the 'anti-face')."""
    ws = G.map(seeds_to_z(ctx.seeds, G.cfg.z_dim, ctx.device))
    cols = [synthesize(G, G.truncate(ws, psi), ctx.res, ctx.alpha, args.noise_mode, args.batch)
            for psi in TRUNCATION_PSIS]
    images = torch.stack(cols, dim=1).flatten(0, 1)  # row-major: seed, then psi
    path = out_path(args, "truncation")
    save_grid(images, path, nrow=len(TRUNCATION_PSIS), min_cell=MIN_CELL)
    print(f"wrote {path}: rows seeds {ctx.seeds}, columns psi {list(TRUNCATION_PSIS)} (truncation in the "
          f"first {G.cfg.truncation_cutoff} ws layers; {ctx.describe})")
    return [path]


def figure_interp(G, ctx, args):
    """A loop w_0 -> w_1 -> ... -> w_0, linear in W (the paper's perceptual path length uses
    the same lerp), with fixed noise so that only the style changes."""
    if len(ctx.seeds) < 2:
        raise SystemExit("--figure interp: give at least two seeds, e.g. --seeds 0-3")
    if args.frames < 1 or args.fps <= 0:
        raise SystemExit("--figure interp: --frames must be >= 1 and --fps > 0")
    ws = G.map(seeds_to_z(ctx.seeds, G.cfg.z_dim, ctx.device), args.psi)
    t = torch.arange(args.frames, device=ctx.device, dtype=ws.dtype) / args.frames  # [frames]
    path_ws = torch.cat([torch.lerp(ws[k:k + 1], ws[(k + 1) % len(ws)][None], t[:, None, None])
                         for k in range(len(ws))])
    noise_mode = args.noise_mode
    if noise_mode == "random":  # a new draw every frame would flicker: one draw, held
        noise_mode = "const"
        print("--figure interp: holding the noise fixed (const) so that frames do not flicker")
    frames = [to_pil(x) for x in synthesize(G, path_ws, ctx.res, ctx.alpha, noise_mode, args.batch)]
    path = out_path(args, "interp", ".gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / args.fps), loop=0)
    print(f"wrote {path}: {len(frames)} frames of {frames[0].width}x{frames[0].height} at {args.fps:g} fps, "
          f"looping through W between seeds {ctx.seeds} (psi {args.psi}; {ctx.describe})")
    return [path]


FIGURES = {None: plain, "mixing": figure_mixing, "noise": figure_noise, "truncation": figure_truncation,
           "interp": figure_interp}


# ----------------------------------------------------------------------------------------------

class Context:
    """What every output needs: device, seeds, resolution and alpha, and a line describing them."""

    def __init__(self, G, info, args):
        self.device = next(G.parameters()).device
        self.seeds = parse_seeds(args.seeds)
        res = info["res"] if args.res is None else args.res
        try:
            self.res = sg.check_res(res, G.cfg)
        except ValueError as e:
            raise SystemExit(f"--res: {e} (this checkpoint's generator is {G.cfg.resolution}x{G.cfg.resolution})")
        self.alpha = info["alpha"] if self.res == info["res"] else 1.0  # a fade only at the run's res
        self.layers_in_use = 2 * (self.res.bit_length() - 1) - 2
        fade = f", alpha {self.alpha:.2f}" if self.alpha < 1 else ""
        self.where = f"{args.which} at {self.res}x{self.res}{fade}"
        self.describe = f"{self.where}, noise {args.noise_mode}"


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device: cannot parse {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def export_official(args):
    """--export-official: the checkpoint's G, D and G_ema as NVIDIA's pickle (stylegan.save_official)."""
    try:
        ckpt = sg.read_checkpoint(args.ckpt)
        sg.check_checkpoint(ckpt, args.ckpt, keys=None)
        src = open(args.build_src).read() if args.build_src else None
        sg.save_official(args.export_official, ckpt, build_src=src)
    except (ValueError, OSError) as e:
        raise SystemExit(f"--export-official: {e}") from None
    res = ckpt["config"]["resolution"]
    print(f"wrote {args.export_official}: G, D and Gs ({res}x{res}) from {args.ckpt} in NVIDIA's pickle format; "
          f"build_module_src: {args.build_src or 'a placeholder (TensorFlow needs --build-src)'}")
    return [args.export_official]


def main(argv=None):
    args = get_args(argv)
    if args.export_official:
        return export_official(args)
    parse_seeds(args.seeds)  # bad input fails before the checkpoint is read
    if args.seeds_b:
        parse_seeds(args.seeds_b)
    device = pick_device(args.device)
    try:
        G, info = sg.load_generator(args.ckpt, which=args.which, device=device)
    except ValueError as e:
        raise SystemExit(f"--ckpt: {e}") from None
    ctx = Context(G, info, args)
    impl, kernels.IMPL = kernels.IMPL, args.impl  # restored below: in-process callers keep theirs
    try:
        torch.manual_seed(0)  # --noise-mode random draws the same noise on every run
        return FIGURES[args.figure](G, ctx, args)
    except OSError as e:  # a folder that is a file, a read-only or full disk
        raise SystemExit(f"--out {args.out}: {e}") from None
    finally:
        kernels.IMPL = impl


if __name__ == "__main__":
    main()
