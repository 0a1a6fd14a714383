"""Progressive StyleGAN trainer: the official FFHQ recipe (Karras et al. 2018, section 2 and
appendix C; NVlabs/stylegan train.py + training_loop.py), self-contained.

    python train.py                                   # built-in dataset, small net, minutes on a CPU
    python train.py --data ffhq --res 1024 --gpus 8   # the paper's FFHQ run (data/ffhq prepared by data.py)
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 train.py --data ffhq --res 1024

Schedule: from --start-res each resolution trains --phase-kimg thousand images, then the next one
fades in over --phase-kimg (already at the new resolution's batch and learning rate, reals faded the
same way). Loss: non-saturating logistic + R1 (gamma 10) every step, or WGAN-GP. Adam (0, 0.99,
1e-8), state reset whenever the phase changes. EMA generator with a 10k-image half-life.
Each run writes to OUT/NNNNN-<data>-<res>/: log.txt, log.jsonl, fakes*.png, ckpt.pt, snapshots.
Exit status: 0 done; 1 an error (one line naming the last good checkpoint); 2 a flag refused before
the run starts; 128 + N after signal N (130 Ctrl-C, 143 SIGTERM), once its checkpoint is written.
"""
import argparse
import contextlib
import copy
import ctypes
import functools
import io
import json
import math
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

import data
import kernels
import stylegan as sg

# Official per-resolution tables (NVlabs/stylegan train.py, training_loop.py). Batch sizes are the
# TOTAL over all GPUs, keyed by GPU count; resolutions missing from a table use its last value.
BATCH = {1: {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4},
         2: {4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 8, 1024: 8},
         4: {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 16, 512: 16, 1024: 16},
         8: {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 32, 256: 32, 512: 32, 1024: 32}}
LR = {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}  # others: 0.001
WGAN_GP_LR_MAX = 0.002  # the official ProGAN-style (WGAN-GP) run caps the table at 0.002
TICK_KIMG = {4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 30, 1024: 20}  # kimg per tick
MIN_PER_PROCESS = 4  # images per process: the minibatch stddev group (official 4) needs them

# Presets (--cfg). "paper" is the official recipe: the flags' defaults and the tables above.
# "quick" is a small net and a short schedule that trains in minutes on a CPU; it is what
# `python train.py` runs with neither --data nor --res. Its deviations from the official recipe,
# for quick experiments only, are each written here and in the README.
CFGS = {
    "paper": dict(),
    # 2026-12-01 tuning on 2 CPU cores, final SWD of the built-in data (mean of 16 and 32 levels):
    # lr 0.002, R1 10, EMA 1k, 4k phases, 24k images: 70. With R1 1, 3k phases, ~35k images: lr 0.003
    # 52, 0.005 44, 0.007 41, 0.01 42, and EMA 3k 41; from there R1 0.05 50, R1 5 43, fmap_base 512
    # (twice the time per image) 47 at 27k, mixing 0.5 39 (kept at the official 0.9 for the mixing
    # figure). The official recipe's lr 0.001, R1 10 and EMA 10k are far too slow for a few minutes.
    # This preset: 44 (3 min 38 s) and 41 in two runs; 40k images instead of 34k: 49 (4 min 32 s);
    # batch 32: 47; 2k phases with mixing 0.5: 41. Later (1 thread each, so SWD only): lazy R1 every 16
    # steps 40 (1.4x the img/s at 32x32), every 4 41, every 16 with 42k images 46, with mixing 0.5 45;
    # EMA 6k 56 (62 with lazy R1); --start-res 16 50; fmap_base 512 with lazy R1 50 (30k images: 49).
    # The preset as it stands, on the final code: 41.5 in 3 min 54 s. Mixing 0: 36.0 (seed 0), 44.5
    # (seed 1): the seed moves the result as much as any setting tried, so the official 0.9 stays.
    # Later (1 thread per run; s0/s1 = seed 0/1): without a ramp-down the same runs went on to 50k at
    # 39-44 (s0) and 48-51 (s1): more images at lr 0.01 do not help. Width 32 at 16 and 32 (fmap_base
    # 512, fmap_max 32, mixing 0) 40 (s0) 47 (s1); R1 0.3 45 (s1); EMA 1.5k 48 (s1); fmap_max 32 at 45k
    # images (the same time) 41 (s0) 42 (s1). --lr-rampdown 0.4: 40.7 (s0, from 41.5), 43.7 (s1, ~49)
    # and 42.4 (s1 with mixing 0, from 44.5): better in 3 runs of 3, and free, so it is on. With lazy R1
    # every 16 steps and 46k images: 35.6 (s1) but 42.7 (s0), and 51.4 with s0 on 2 threads in 4 min
    # 54 s (no faster than R1 every step there). 120k images with the ramp (s0): 40 from 32k to 56k,
    # 35 at 64k, 30 at 72k, 28 at 120k: an SWD of 35 takes about twice the images that fit in 5 min.
    # In channels_last on the CPU (on_device; 2 threads, s0): 47.2 (3 min 20 s), 40k images 46.5 (4 min
    # 15 s), 44k 43.7 (4 min 34 s): within the spread, so 34k stays, with time to spare on slower machines.
    # Also (1 thread per run): the mapping network's lrmul 0.1 instead of the official 0.01 51.5 (s0) 51.4
    # (s1); --lr-rampdown 0.7 45.4 (s0) 52.4 (s1); Adam beta1 0.5 45.4 (s0) 50.2 (s1). None beats the preset.
    # With the resampling convs fused from 16x16 (train.FUSED_FROM; 2 threads, s0): 46.0 in 2 min 59 s. Then
    # (1 thread per run): batch 8 46.5 (s0) 48.1 (s1); 50k images 49.5 (s0) 44.7 (s1): no better.
    # Lazy R1 every 16 steps with more images (1 thread per run, SWD every 12k): batch 16 to 72k images
    # 42.3 / 41.5 / 43.9 / 46.3 at 36k / 48k / 60k / 72k (s0) and 41.0 /
    # 49.5 / 44.3 / 31.3 (s1); batch 32 to 70k 43.3 / 41.1 / 45.2 at 42k / 56k / 70k (s0), 45.3 / 42.1 /
    # 38.6 (s1). The spread is training's, not the metric's: the s0 checkpoint at 72k scores 46.3, 45.5
    # and 46.6 with metric seeds 0, 1, 2. The preset with w_dim 128: 43.9 (s0) 51.0 (s1); with 2k phases
    # 44.9 (s0); both 52.1 (s0); 5k phases to 40k images 52.5 (s0) 48.6 (s1). By the same metric two sets of
    # built-in reals score 7.5 at 32 and 12.6 at 16 (10.1), the reals blurred 2x 63.7 and 18.4 (41.1): these
    # runs end at 38-74 at 32 and 25-41 at 16, short of the blurred reals' coarse structure as well.
    # Mixing 0 on the final code: 41.9 (s0: 60.1 at 32, 23.7 at 16) 45.3 (s1: 69.4, 21.1).
    # Lazy R1 every 16 steps on 2 threads (s0, alone on the machine): 72k images 32.4 in 6 min 03 s, 58k
    # 37.6 in 4 min 56 s (190-198 img/s at 32x32, against 180 with R1 every step): under 35 only past 5 min.
    # The same with batch 32 (245-250 img/s at 32x32): 72k images 47.4 in 4 min 54 s.
    # Later (1 thread per run unless said; s0/s1): the preset 44.2 / 49.5; with shared fakes (one G forward
    # per iteration, 8% off a step) 40.5 / 53.0, so they are on; from there D's lr x2 48.3 / 58.5, x0.5
    # 47.7 / 52.3; R1 0.1 48.3 / 50.7, R1 0.02 56.6 / 69.8; 15k images at 16x16 before 32x32 (40k in all)
    # 48.6 / 45.3; lazy R1 every 16 to 58k 43.5 / 42.7 (39-46 from 32k on: a plateau), to 50k on 2 threads
    # 48.0 (s0, 4 min 37 s). A D trained alone against the frozen G of a 58k run gets its loss from 1.29 to
    # 0.58 in 400 steps with R1 0 but only to 1.15-1.18 with R1 1, yet lower gammas train worse (above).
    # On 2 threads the preset: 45.2 in 3 min 38 s (the machine then 12% slower per step than in the morning).
    # The preset with mixing 0 (the paper's ablation): 41.1 / 39.6, swd16 22.2 / 21.4 against 29-36 with
    # 0.9; the official 0.9 stays, for the mixing figure. swd32 stays at 50-62 in every run: about the
    # blurred reals' 63.7, so the 32x32 textures (background stripes, checks, dots) are what is missing.
    # Adam beta2 0.9 (official 0.99): 45.7 / 42.3. Mixing 0.5: 48.3 / 41.0. Lazy R1 every 16 steps with shared
    # fakes: 42.7 / 49.4, the same within the spread for 15% less time a step (67 against 79 ms), so it is on.
    # 2026-12-02, with the data loaded in the trainer's process (loader_workers): the preset 46.0 (s0) in 3 min
    # 20 s; with mixing 0 41.6 (s0) in 3 min 08 s and 42.4 (s1, 3 min 02 s), to 44k images 39.3 (s0, 4 min
    # 58 s) and 40.0 (s1, 4 min 27 s); on 1 thread to 46k 35.0 (s0) 44.8 (s1). Mixing 0 has now scored better
    # than 0.9 in 3 of 4 pairs and within 0.6 in the fourth (41.1 / 39.6 against 40.5 / 53.0 with shared
    # fakes, above), so the quick preset trains without it (the paper's Table 2 ablation; the
    # architecture and its coarse/fine styles are unchanged, and sample.py's mixing figure still swaps them).
    # On real photos (6,000 CelebA from their tar, --cfg quick, s0, 3 min 49 s): 21.5 against 25.9 with 0.9.
    "quick": dict(res=32, fmap_base=256, fmap_max=64, w_dim=64, kimg=34, phase_kimg=3, batch=16, lr=0.01,
                  lr_rampdown=0.4, r1_gamma=1.0, ema_kimg=3, mixing=0.0, tick_kimg=4, snap_kimg=8, metrics="swd",
                  metrics_kimg=34, metrics_num=1024, shared_fakes=True, r1_every=16),
}


def add_network_flags(p):
    """The network's size and the paper's ablations, a group of their own in --help."""
    g = p.add_argument_group("network size and the paper's ablations")
    g.add_argument("--fmap-base", type=int, default=None, help="channels nf(s) = min(fmap_base/2**s, "
                   "fmap_max) (official 8192)")
    g.add_argument("--fmap-max", type=int, default=None, help="channel cap (official 512)")
    g.add_argument("--w-dim", type=int, default=None, help="z and w dimension (official 512)")
    g.add_argument("--mapping-layers", type=int, default=None, help="mapping depth (official 8; 0 = z as w)")
    g.add_argument("--no-noise", action="store_true", help="no per-layer noise inputs (ablation)")
    g.add_argument("--config", choices=list(sg.PAPER_CONFIGS), default=None, metavar="NAME",
                   help="a generator of the paper's Tables 1, 2 and 4 with its style mixing probability "
                   "(stylegan.PAPER_CONFIGS): " + ", ".join(sg.PAPER_CONFIGS) + ". Default: table1-f, "
                   "the full StyleGAN; --mapping-layers, --no-noise and --mixing given explicitly win")
    g.add_argument("--mbstd-group", type=int, default=4, help="minibatch stddev group size (official 4); 0 or 1 "
                   "= no stddev layer, as the official D")


def arg_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", default=None, help="image folder, zip, prepared dataset dir, a name under data/ (e.g. "
      "ffhq), or 'builtin'. Default: data/ffhq if prepared, else the built-in procedural dataset")
    a("--res", type=int, default=None, help="final resolution (power of two). Default: the dataset's "
      "(--cfg paper) or 32 (--cfg quick)")
    a("--cfg", choices=list(CFGS), default=None, help="preset. paper: the official recipe (the default "
      "whenever --data or --res is given). quick: a small net and a short schedule that train in "
      "minutes on a CPU (the default with neither --data nor --res): "
      + ", ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in CFGS["quick"].items())
      + ". Flags given explicitly win over the preset")
    a("--gpus", type=int, default=1, help="processes on this machine (GPUs; CPU processes with gloo "
      "when there is no GPU). Under torchrun, RANK/WORLD_SIZE from the environment are used instead")
    a("--out", default="runs", help="parent folder of the numbered run folders")
    a("--kimg", type=float, default=25000, help="total thousands of real images shown (official 25000)")
    a("--phase-kimg", type=float, default=600, help="kimg of each fade-in and each stable phase")
    a("--start-res", type=int, default=8, help="resolution training starts at (official FFHQ: 8)")
    a("--batch", type=int, default=None, help="total batch for every resolution (default: official table)")
    a("--lr", type=float, default=None, help="learning rate for every resolution (default: official "
      "0.001, raised to 0.0015/0.002/0.003 at 128/256/512+)")
    a("--loss", choices=["r1", "wgan-gp"], default="r1", help="logistic + R1 (StyleGAN) or WGAN-GP (ProGAN)")
    a("--r1-gamma", type=float, default=10.0, help="R1 weight gamma (also the WGAN-GP lambda)")
    a("--r1-every", type=int, default=1, help="lazy R1 (StyleGAN2): the penalty every K-th step only, in a D "
      "step of its own weighted by K, D's Adam lr and betas adjusted by K/(K+1). 1 = every step, official "
      "StyleGAN; 16 = StyleGAN2's (the quick preset)")
    a("--lr-rampdown", type=float, default=0.0, help="the learning rate falls to 0 along a half cosine over "
      "this last fraction of --kimg (not in the official recipe: 0, none; the quick preset: 0.4)")
    a("--mixing", type=float, default=0.9, help="style mixing probability (0 = the paper's ablation)")
    a("--shared-fakes", action=argparse.BooleanOptionalAction, default=False, help="one G forward per "
      "iteration: the D step trains on the G step's fakes (detached), and the G step then trains through "
      "them (DCGAN's order). Official StyleGAN: off, the D step draws fakes of its own (a second G forward); "
      "the quick preset: on")
    a("--mirror", action=argparse.BooleanOptionalAction, default=True,
      help="random horizontal flips of the reals (official FFHQ: on)")
    a("--ema-kimg", type=float, default=10.0, help="half-life of the EMA generator in kimg")
    a("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
      help="autocast precision; auto = bf16 on CUDA, off on CPU")
    a("--r1-precision", choices=["fp32", "tf32", "amp"], default="fp32", help="precision of the R1 (or "
      "WGAN-GP) pass on the reals: fp32 keeps the official penalty (bf16 autocast is 1.4-6.5%% off it); "
      "tf32 allows TF32 there; amp runs it under --amp like the rest")
    a("--resume", default=None, help="'auto' = the latest run in --out that has a checkpoint; or a ckpt path")
    a("--seed", type=int, default=0, help="seed for the weights, latents, noise and data order")
    a("--impl", choices=["auto", "triton", "ref"], default="auto", help="fused kernels (kernels.py) or "
      "the plain PyTorch references")
    a("--memory-format", choices=["auto", "channels_last", "nchw"], default="auto", help="layout of weights and "
      "activations, the same math: auto is channels_last on a CPU (faster there), NCHW on CUDA until a GPU run "
      "has measured channels_last (README)")
    a("--cuda-graphs", action="store_true", help="replay each stable phase's training step as CUDA graphs "
      "(one GPU, --amp bf16 or off). Off by default until a GPU run has measured it (README)")
    a("--tick-kimg", type=float, default=None, help="kimg between progress lines and sample grids "
      "(default: official, 160 at 4x4 down to 20 at 1024)")
    a("--snap-kimg", type=float, default=None, help="kimg between checkpoints (default: 10 ticks)")
    a("--metrics-kimg", type=float, default=0, help="evaluate --metrics every this many kimg (0 = never)")
    a("--metrics", default="fid", help="comma list of fid,kid,swd for --metrics-kimg")
    a("--metrics-num", type=int, default=50000, help="generated images per metric evaluation")
    a("--skip-bad", action="store_true", help="skip undecodable images instead of stopping")
    a("--workers", type=int, default=None, help="data loader worker processes per training process (default: "
      "none on a CPU, where the training step's threads take every core; up to 4 on a GPU)")
    add_network_flags(p)
    return p



# What each numeric flag allows; anything else is refused before a run starts. None (not given)
# means the official default. Integers > 0 read as ">= 1".
POSITIVE = ("kimg", "batch", "lr", "gpus", "r1_every", "ema_kimg", "tick_kimg", "snap_kimg", "metrics_num", "fmap_base",
            "fmap_max", "w_dim")
NON_NEGATIVE = ("phase_kimg", "r1_gamma", "metrics_kimg", "mapping_layers", "seed", "mbstd_group", "workers")


def check_ranges(p, args):
    """One line and exit status 2 (argparse's convention) for a number a flag cannot mean: a run
    of 0 kimg, a batch of 0 (which the tables used to replace by 128), a probability above 1."""
    for k in POSITIVE + NON_NEGATIVE:
        v = getattr(args, k)
        ok = v is None or math.isfinite(v) and (v > 0 if k in POSITIVE else v >= 0)
        if not ok:
            kind = "an integer" if isinstance(v, int) else "a finite number"
            low = (">= 1" if isinstance(v, int) else "> 0") if k in POSITIVE else ">= 0"
            p.error(f"--{k.replace('_', '-')} {v:g}: must be {kind} {low}")
    if not 0 <= args.mixing <= 1:  # also refuses nan
        p.error(f"--mixing {args.mixing:g}: a probability, must be between 0 and 1")
    if not 0 <= args.lr_rampdown <= 1:
        p.error(f"--lr-rampdown {args.lr_rampdown:g}: a fraction of the run, must be between 0 and 1")


def refuse(message):
    """A flag that contradicts what prepare() found (the checkpoint, the file system): the same
    one-line error and exit status 2 as a flag out of range."""
    arg_parser().error(message)


def get_args(argv=None):
    p = arg_parser()
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    args.given = {t[2:].split("=")[0].removeprefix("no-").replace("-", "_") for t in argv if t.startswith("--")}
    if args.cfg is None:
        args.cfg = "quick" if args.data is None and args.res is None else "paper"
    for k, v in CFGS[args.cfg].items():  # explicit flags still win over the preset
        if k not in args.given and k != "res":
            setattr(args, k, v)
    if args.config and "mixing" not in args.given:
        args.mixing = sg.PAPER_CONFIGS[args.config]["mixing"]
    check_ranges(p, args)
    return args


# ----------------------------------------------------------------------------------------------
# Schedule

@dataclass
class Phase:
    res: int       # resolution trained at (the new one while it fades in)
    alpha: float   # 1 = stable; < 1 = res fading in over res/2
    batch: int     # total over all processes
    lr: float


def schedule(cur_nimg, final_res, start_res=8, phase_kimg=600, num_gpus=1, batch=None, lr=None, lr_max=None):
    """Images shown -> Phase. From start_res: phase_kimg stable, then phase_kimg fading in the next
    resolution, and so on; the final resolution then trains until the end (official lod schedule).
    The batch table's totals are raised to MIN_PER_PROCESS images per process (past 8 processes)."""
    kimg = cur_nimg / 1000
    fades = int(math.log2(final_res // start_res))
    step = int(kimg // (2 * phase_kimg)) if phase_kimg > 0 else fades
    res, alpha = final_res, 1.0
    if step < fades:
        res = start_res * 2 ** step
        t = kimg - step * 2 * phase_kimg
        if t >= phase_kimg:
            res, alpha = res * 2, (t - phase_kimg) / phase_kimg
    table = BATCH[max(k for k in BATCH if k <= num_gpus)]
    total = batch or max(table.get(res, table[1024]), MIN_PER_PROCESS * num_gpus)
    return Phase(res, alpha, total, lr or min(LR.get(res, 0.001), lr_max or math.inf))


def lr_ramp(nimg, args):
    """--lr-rampdown F: 1 until the last F of the run, then a half cosine down to 0 at its end. The
    official StyleGAN keeps its learning rates to the end (F = 0); the quick preset, whose last grid
    is what a newcomer sees, ramps down over its last 40% (the runs behind that are beside CFGS)."""
    if args.lr_rampdown <= 0:
        return 1.0
    t = (nimg / (args.kimg * 1000) - (1 - args.lr_rampdown)) / args.lr_rampdown
    return 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def phase_at(nimg, args, world, final_res):
    """The schedule with this run's flags (WGAN-GP: the learning rate capped as the official run;
    --lr-rampdown: the learning rate times lr_ramp)."""
    phase = schedule(nimg, final_res, args.start_res, args.phase_kimg, world, args.batch, args.lr,
                     lr_max=WGAN_GP_LR_MAX if args.loss == "wgan-gp" else None)
    phase.lr *= lr_ramp(nimg, args)
    return phase


# ----------------------------------------------------------------------------------------------
# Losses: non-saturating logistic with R1 (StyleGAN), or WGAN-GP with ProGAN's drift term

def autocast(args):
    """Autocast's cache of cast weights must be off inside a CUDA graph capture (PyTorch's rule)."""
    return torch.autocast(args.device.type, dtype=torch.float16 if args.amp == "fp16" else torch.bfloat16,
                          enabled=args.amp in ("bf16", "fp16"), cache_enabled=not args.cuda_graphs)


@contextlib.contextmanager
def fp32_math(args):
    """TF32 tensor cores (Ampere and later) for fp32 convolutions and matmuls only with --r1-precision
    tf32. PyTorch allows them for convolutions by default, which would turn the fp32 R1 pass, and
    the backward through it, into TF32."""
    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = [f.allow_tf32 for f in flags]
    for f in flags:
        f.allow_tf32 = args.r1_precision == "tf32"
    try:
        yield
    finally:
        for f, v in zip(flags, saved):
            f.allow_tf32 = v


@contextlib.contextmanager
def penalty_pass(args):
    """The precision of the gradient penalty's pass: D on the reals and its gradient (the double
    backward through them runs in D's backward, under fp32_math). Under bf16 autocast the R1 penalty
    of the full-size D differs from fp32 by 1.4-6.7% (TF32, emulated: 0.5-1.6%), so by default it
    runs in fp32 with TF32 off, the official math (README: "Mixed precision"). --r1-precision tf32
    or amp trade that for speed."""
    with fp32_math(args), (autocast(args) if args.r1_precision == "amp" else
                           torch.autocast(args.device.type, enabled=False)):
        yield


def r1_penalty(D, reals, alpha, args, scale=1.0):
    """R1 (Mescheder et al. 2018): ||dD(x)/dx||^2 for each real image x. Returns (D's logits of the
    reals, the penalty per image). The pass runs in the precision --r1-precision asks for (penalty_pass).
    scale: fp16's loss scale, so that an fp16 gradient does not underflow.
    The official D always reads full-resolution images (lower resolutions nearest-upsampled, then
    average-pooled inside D), so its gradient is taken with respect to those: each gradient of a
    res x res image spreads over k*k pixels at 1/k^2 each, k = final/res. Squared and summed, the
    official penalty is the one at res times (res/final)^2 (gamma 10 at 1024, ~6e-4 at 8x8)."""
    reals = reals.detach().requires_grad_(True)
    with penalty_pass(args):
        logits = sg.fp32_or_wider(D(reals, alpha))
        grad, = torch.autograd.grad(scaled(logits.sum(), scale), reals, create_graph=True)
    k2 = (reals.shape[-1] / D.cfg.resolution) ** 2
    return logits, scaled(sg.fp32_or_wider(grad), 1 / scale).square().sum(dim=(1, 2, 3)) * k2


def scaled(t, scale):
    """t * scale, and t itself for a scale of 1 (bf16 and fp32: no pass over a full-size gradient)."""
    return t if scale == 1.0 else t * scale


def gradient_penalty(D, reals, fakes, alpha, args, scale=1.0):
    """WGAN-GP (Gulrajani et al. 2017): (||dD(x)/dx|| - 1)^2 at x a random mix of a real and a fake
    image, per image; the gradient is taken at full resolution as in r1_penalty."""
    eps = torch.rand(reals.shape[0], 1, 1, 1, device=reals.device)
    mixed = torch.lerp(reals, sg.fp32_or_wider(fakes), eps).requires_grad_(True)
    with penalty_pass(args):
        logits = sg.fp32_or_wider(D(mixed, alpha))
        grad, = torch.autograd.grad(scaled(logits.sum(), scale), mixed, create_graph=True)
    k = mixed.shape[-1] / D.cfg.resolution
    return (scaled(sg.fp32_or_wider(grad), 1 / scale).flatten(1).norm(dim=1) * k - 1).square()


def d_loss(G, D, reals, z, phase, args, scale=1.0, r1=True, fakes=None):
    """D's loss on reals and fakes: returns (loss, penalty), both batch means. r1=False: the
    logistic loss alone (lazy R1 adds the penalty in a step of its own, r1_step); penalty is None.
    fakes: the G step's, detached (--shared-fakes); None draws fresh ones from z, without a graph."""
    if fakes is None:
        with torch.no_grad(), autocast(args):
            fakes = G(z, phase.res, phase.alpha, mixing=args.mixing)
    if args.loss == "r1" and not r1:
        with autocast(args):
            real_logits = sg.fp32_or_wider(D(reals, phase.alpha))
            fake_logits = sg.fp32_or_wider(D(fakes, phase.alpha))
        return (F.softplus(fake_logits) + F.softplus(-real_logits)).mean(), None
    if args.loss == "r1":
        real_logits, penalty = r1_penalty(D, reals, phase.alpha, args, scale)
        with autocast(args):
            fake_logits = sg.fp32_or_wider(D(fakes, phase.alpha))
        loss = F.softplus(fake_logits) + F.softplus(-real_logits) + penalty[:, None] * (args.r1_gamma / 2)
        return loss.mean(), penalty.mean()
    penalty = gradient_penalty(D, reals, fakes, phase.alpha, args, scale)
    with autocast(args):
        real_logits = sg.fp32_or_wider(D(reals, phase.alpha))
        fake_logits = sg.fp32_or_wider(D(fakes, phase.alpha))
    loss = fake_logits - real_logits + args.r1_gamma * penalty[:, None] + 0.001 * real_logits.square()
    return loss.mean(), penalty.mean()


def g_loss(G, D, z, phase, args, fakes=None):
    """G's loss on fakes from z, or on the given ones (their graph through G kept: --shared-fakes)."""
    with autocast(args):
        fakes = G(z, phase.res, phase.alpha, mixing=args.mixing) if fakes is None else fakes
        logits = sg.fp32_or_wider(D(fakes, phase.alpha))
    return (F.softplus(-logits) if args.loss == "r1" else -logits).mean()


# ----------------------------------------------------------------------------------------------
# The training step

# fp16 loss scaling. With the penalty pass in fp32 nothing in R1 can overflow; the fp16 fake pass and
# G step overflowed at PyTorch's default start (65536), so the scale starts and stays at most here.
SCALE_INIT, SCALE_MAX = 2.0 ** 10, 2.0 ** 14


def make_scalers(args):
    """fp16 needs loss scaling; bf16 and fp32 do not (the scalers are then disabled no-ops)."""
    return [torch.amp.GradScaler(args.device.type, init_scale=SCALE_INIT, enabled=args.amp == "fp16")
            for _ in range(2)]


def loss_scale(scaler):
    return scaler.get_scale() if scaler.is_enabled() else 1.0


def apply_update(scaler, opt):
    """The optimizer step through the scaler; False when fp16 found an overflow and dropped it."""
    before = loss_scale(scaler)
    scaler.step(opt)
    scaler.update()
    after = loss_scale(scaler)
    if after > SCALE_MAX:
        scaler.update(SCALE_MAX)
    return after >= before


def r1_step(D, opt_D, scaler_D, reals, phase, args, average):
    """Lazy R1 (StyleGAN2, --r1-every K > 1): every K-th iteration R1 alone takes a D step of its own,
    weighted by K. Returns (penalty, whether the update was applied)."""
    _, penalty = r1_penalty(D, reals, phase.alpha, args, loss_scale(scaler_D))
    opt_D.zero_grad(set_to_none=True)
    with fp32_math(args):  # R1's double backward
        scaler_D.scale(penalty.mean() * (args.r1_gamma / 2 * args.r1_every)).backward()
    average(D.parameters())
    return penalty.mean(), apply_update(scaler_D, opt_D)


def train_step(G, D, G_ema, opt_G, opt_D, scalers, reals, z_D, z_G, phase, args, average=None, regularize=True):
    """One official training iteration: a D step on reals and fresh fakes (--shared-fakes: the G
    step's own, from z_G; z_D is then unused), then a G step, then the EMA generator.
    average(params, extra) averages gradients over processes (GradAverage); with one process there
    is nothing to average. regularize: this iteration carries the penalty (always,
    unless --r1-every K > 1: every K-th). Returns [G loss, D loss, penalty, 1 if a penalty was
    taken], or None when fp16 loss scaling dropped an update for an overflow: then G_ema and w_avg
    have not moved (a dropped D update also skips the G step) and the caller does not count the
    images."""
    average = average or (lambda params, extra=None: extra)
    scaler_G, scaler_D = scalers  # fp16 only; no-ops otherwise
    w_avg = G.w_avg.clone() if scaler_D.is_enabled() else None
    lazy = args.loss == "r1" and args.r1_every > 1
    fakes = None
    if args.shared_fakes:  # G's one forward of the iteration, its graph kept for the G step
        with autocast(args):
            fakes = G(z_G, phase.res, phase.alpha, mixing=args.mixing)
    loss_D, penalty = d_loss(G, D, reals, z_D, phase, args, loss_scale(scaler_D), r1=not lazy,
                             fakes=None if fakes is None else fakes.detach())
    opt_D.zero_grad(set_to_none=True)
    with fp32_math(args):  # R1's double backward
        scaler_D.scale(loss_D).backward()
    average(D.parameters())
    applied = apply_update(scaler_D, opt_D)
    if applied and lazy and regularize:
        penalty, applied = r1_step(D, opt_D, scaler_D, reals, phase, args, average)
    if not applied:
        G.w_avg.copy_(w_avg)
        return None

    D.requires_grad_(False)
    loss_G = g_loss(G, D, z_G, phase, args, fakes)
    opt_G.zero_grad(set_to_none=True)
    scaler_G.scale(loss_G).backward()
    D.requires_grad_(True)
    G.w_avg.copy_(average(G.parameters(), G.w_avg))  # the mean of the processes' EMAs: the global batch's
    if not apply_update(scaler_G, opt_G):
        G.w_avg.copy_(w_avg)
        return None

    beta = 0.5 ** (phase.batch / (args.ema_kimg * 1000))  # official G_smoothing_kimg
    with torch.no_grad():
        torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1 - beta)
        torch._foreach_copy_(list(G_ema.buffers()), list(G.buffers()))  # w_avg, const noise maps
    taken = penalty is not None
    penalty = penalty.detach() if taken else torch.zeros_like(loss_D)
    return torch.stack([loss_G.detach(), loss_D.detach(), penalty, torch.ones_like(penalty) * taken])


def eager_step(s, reals, z_D, z_G, phase, args, average, regularize):
    """train_step on a State (GraphedStep's signature)."""
    return train_step(s.G, s.D, s.G_ema, s.opt_G, s.opt_D, s.scalers, reals, z_D, z_G, phase, args, average,
                      regularize)


def adam(module, lr, ratio=1.0):
    """The official Adam (0, 0.99, 1e-8). ratio: StyleGAN2's lazy-regularization adjustment of D's,
    c = K / (K + 1) for R1 every K steps: lr * c, betas ** c (d_ratio). PyTorch's fused Adam (CPU and
    CUDA): two or three launches per network and step instead of about 16 foreach ones, and its step
    counts live on the device, which a CUDA graph can capture (--cuda-graphs)."""
    return torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8, fused=True)


def d_ratio(args):
    """K / (K + 1) with lazy R1 (--r1-every K > 1): the D optimizer takes K + 1 steps per K iterations."""
    return args.r1_every / (args.r1_every + 1) if args.loss == "r1" and args.r1_every > 1 else 1.0


def fade_reals(reals, alpha):
    """Reals see the same fade as fakes: lerp(upsample(downsample(x)), x, alpha)."""
    if alpha >= 1:
        return reals
    return torch.lerp(F.interpolate(F.avg_pool2d(reals, 2), scale_factor=2), reals, alpha)


# ----------------------------------------------------------------------------------------------
# CUDA graphs (--cuda-graphs): a step's ~1,000 launches (bench.py --parts count) replayed as one

class GraphedStep:
    """train_step, captured as a CUDA graph once per stable phase and then replayed. Within a stable
    phase the shapes, the learning rate and the EMA's beta are fixed; a fading phase changes alpha
    every step, and --lr-rampdown the learning rate, so those steps run eagerly. Each call copies its
    reals and latents into the graph's static inputs; the noise and the style mixing are drawn inside
    the step from the CUDA generator, which a replay advances as eager calls do (and next_batch
    reseeds it each step). Lazy R1 gives two graphs, with and without the penalty. Before each
    capture the step runs WARMUP times eagerly on a side stream (PyTorch's recipe: cuDNN and Triton
    pick their kernels, Adam makes its state).
    Needs one process (the gradient all-reduce is not captured) and no fp16 loss scaling (it reads
    the scale on the host): prepare() refuses the rest."""

    WARMUP = 3

    def __init__(self):
        self.key, self.graphs, self.warm = None, {}, {}

    def __call__(self, s, reals, z_D, z_G, phase, args, average, regularize):
        step = functools.partial(eager_step, s, phase=phase, args=args, average=average, regularize=regularize)
        if phase.alpha < 1 or lr_ramp(s.cur_nimg, args) < 1:  # alpha or the learning rate moves each step
            return step(reals, z_D, z_G)
        if s.phase_key != self.key:  # a new phase: new optimizers, new shapes
            self.key, self.graphs, self.warm = s.phase_key, {}, {}
        if regularize not in self.graphs:
            self.warm[regularize] = self.warm.get(regularize, 0) + 1
            if self.warm[regularize] <= self.WARMUP:
                return self.eager(step, reals, z_D, z_G)
            self.graphs[regularize] = self.capture(step, reals, z_D, z_G)
        graph, inputs, out = self.graphs[regularize]
        for static, x in zip(inputs, (reals, z_D, z_G)):
            static.copy_(x)
        graph.replay()
        return out.clone()

    @staticmethod
    def eager(step, *inputs):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = step(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        return out

    @staticmethod
    def capture(step, *inputs):
        """(graph, static inputs, static output). Capturing records the step without running it."""
        inputs = [x.clone() for x in inputs]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the loader's pinning thread goes on
            out = step(*inputs)
        return graph, inputs, out


# ----------------------------------------------------------------------------------------------
# Distributed: gradients are averaged by hand (one all-reduce per network per step). Unlike DDP's
# hooks this works with R1's double backward and with the unused parameters of higher resolutions.

class GradAverage:
    """average(params, extra): every process's gradients replaced by their mean over processes, in
    one all-reduce; `extra` (e.g. w_avg) rides along and its mean is returned, and so do the stop
    requests (`stops`, summed: a signal to any process stops all). check=True first verifies that
    every process holds gradients for the same parameters (they follow from the phase, which all
    share) with one more tiny all-reduce; the loop sets it at each new phase."""

    def __init__(self, world, device):
        self.world, self.check = world, True
        self.stops = torch.zeros(1, device=device)

    def __call__(self, params, extra=None):
        if self.world == 1:
            return extra
        params = list(params)
        grads = [p.grad for p in params if p.grad is not None]
        if self.check:
            has = torch.tensor([float(p.grad is not None) for p in params], device=self.stops.device)
            both = torch.cat([has, -has])
            dist.all_reduce(both, op=dist.ReduceOp.MAX)
            if not torch.equal(both[:len(has)], -both[len(has):]):
                raise RuntimeError("processes hold gradients for different parameters; cannot average")
        extra = self.stops[:0] if extra is None else extra
        flat = torch.cat([g.flatten() for g in grads] + [extra.flatten(), self.stops])
        dist.all_reduce(flat)
        flat[:-1] /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        self.stops = flat[-1:]
        return flat[offset:-1].view_as(extra)


def setup_distributed(rank, args):
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", 0))
    else:
        world, local = args.gpus, rank
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # shapes are fixed within a phase
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
        if device.type == "cpu":  # N processes share the cores; oversubscribed OpenMP threads spin
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return rank, world, device


def broadcast_text(text, device, size=4096):
    """Rank 0's string on every process, sent as bytes in a tensor rather than a pickle."""
    raw = text.encode()[:size]
    buf = torch.zeros(size, dtype=torch.uint8)
    buf[:len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    buf = buf.to(device)
    dist.broadcast(buf, 0)
    return bytes(buf.cpu().tolist()).rstrip(b"\0").decode()


def step_seed(seed, stream, step):
    """Every step reseeds from (seed, stream, step): latents, noise, mixing and flips are then the
    same after a resume as in an uninterrupted run. Stream 0 is shared by all processes."""
    return (seed * 1_000_003 + stream) * 1_000_003 + step


def reseed(seed, device):
    """torch.manual_seed for the generators a step draws from: the CPU's, and on CUDA the current
    GPU's. (Where CUDA is not initialized, torch.manual_seed also queues a seeding of each other
    backend with a formatted traceback: 0.1 ms a call on a 2-core CPU.)"""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def in_sync(modules, world):
    """True when every process holds the same weights (checked at each checkpoint)."""
    if world == 1:
        return True
    s = torch.cat([p.detach().flatten() for m in modules for p in m.parameters()]).double().sum()
    both = torch.stack([s, -s])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return bool(both[0] == -both[1])


# ----------------------------------------------------------------------------------------------
# Run folder, checkpoints, pictures

def new_run_dir(args):
    """Creates OUT/NNNNN-<data>-<res> with the next free number. mkdir refuses a name that exists, so
    two runs started together never share a folder: the one that loses the race takes the next."""
    os.makedirs(args.out, exist_ok=True)
    while True:
        nums = [int(d[:5]) for d in os.listdir(args.out) if d[:5].isdigit()]
        path = os.path.join(args.out, f"{max(nums, default=-1) + 1:05d}-{args.data_name}-{args.final_res}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


def kimg_name(nimg):
    """000012.345 for 12,345 images: exact to the image, so snapshots and grids taken less than a
    kimg apart (--snap-kimg, --tick-kimg below 1) never replace one another, and names sort in order."""
    return f"{nimg // 1000:06d}.{nimg % 1000:03d}"


def latest_checkpoint(out):
    runs = sorted(d for d in os.listdir(out) if d[:5].isdigit()) if os.path.isdir(out) else []
    for d in reversed(runs):
        if os.path.isfile(os.path.join(out, d, "ckpt.pt")):
            return os.path.join(out, d, "ckpt.pt")
    return None


def plain_args(args):
    """The flags as plain values (what a checkpoint and args.json keep)."""
    return {k: v for k, v in vars(args).items() if v is None or isinstance(v, (str, int, float, bool))}


def nbytes(state):
    """About the size `state` takes on disk: its tensors' bytes, plus text."""
    if torch.is_tensor(state):  # plus torch.save's zip header and 64-byte alignment per tensor
        return state.untyped_storage().nbytes() + 128
    if isinstance(state, dict):
        return sum(nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(nbytes(v) for v in state)
    return len(state) if isinstance(state, (str, bytes)) else 8


def write_error(path, state, e):
    """The OSError behind a failed save (torch.save keeps it as the RuntimeError's context), with
    the space the file needs and the space there is."""
    cause = e
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    why = (cause.strerror or str(cause)) if cause is not None else str(e).splitlines()[0]
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = f"{shutil.disk_usage(folder).free / 2 ** 20:.1f} MB free now"
    except OSError:
        free = "free space unknown"
    return OSError(f"cannot write {path}: {why}; it needs about {nbytes(state) / 2 ** 20:.1f} MB free "
                   f"in {folder} ({free})")


def save_checkpoint(path, state, durable=True):
    """Atomic and durable: a crash (or power loss) while writing never leaves a truncated file
    under the real name. `state` is a dict for torch.save, text or bytes. A failed write (a full
    disk) removes its partial file, which would otherwise keep the disk full, and raises a one-line
    OSError with the space the file needs. durable=False skips the fsyncs (sample grids)."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w" if isinstance(state, str) else "wb") as f:
            f.write(state) if isinstance(state, (str, bytes)) else torch.save(state, f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # also a second Ctrl-C: no partial file stays behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, (OSError, RuntimeError)):  # torch.save reports a failed write as a RuntimeError
            raise write_error(path, state, e) from None
        raise
    if not durable:
        return
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself
    finally:
        os.close(fd)


def remove_partial_files(run_dir):
    """The .tmp files of saves that a kill -9 or a power loss cut short: never read, only in the way."""
    stale = sorted(f for f in os.listdir(run_dir) if f.endswith(".tmp"))
    for f in stale:
        os.remove(os.path.join(run_dir, f))
    return stale


def save_grid(images, path, nrow=8, min_cell=64):
    """images [N, C, H, W] in [-1, 1] -> one PNG grid (written atomically); small images are
    enlarged (nearest)."""
    from PIL import Image
    x = sg.to_uint8(images.detach()).cpu()
    if x.shape[-1] < min_cell:
        x = F.interpolate(x, scale_factor=min_cell // x.shape[-1], mode="nearest")
    N, C, H, W = x.shape
    ncol = min(nrow, N)
    nrows = math.ceil(N / ncol)
    grid = torch.zeros(C, nrows * H, ncol * W, dtype=torch.uint8)
    for i in range(N):
        r, c = divmod(i, ncol)
        grid[:, r * H:(r + 1) * H, c * W:(c + 1) * W] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower(), "PNG")
    Image.fromarray(arr[:, :, 0] if C == 1 else arr).save(buf, format=fmt)
    save_checkpoint(path, buf.getvalue(), durable=False)


def estimate_eta(cur_nimg, total_nimg, sec_per_kimg, cur_res, final_res, args, world):
    """Seconds left: the rest of the schedule timed with the speed measured at each resolution; a
    resolution not reached yet is assumed sqrt(2) times slower per doubling (a rough guess between
    overhead-bound low resolutions and pixel-bound high ones, replaced once it is measured)."""
    step = max(1000, (total_nimg - cur_nimg) // 1000)
    seconds = 0.0
    for nimg in range(cur_nimg, total_nimg, step):
        res = phase_at(nimg, args, world, final_res).res
        rate = sec_per_kimg.get(res, sec_per_kimg[cur_res] * max(res / cur_res, 1) ** 0.5)
        seconds += min(step, total_nimg - nimg) / 1000 * rate
    return seconds


PROGRESS_SEC = 30  # a progress line at least this often between ticks (the first after a third of it)


def fmt_time(s):
    s = int(s)
    return f"{s // 86400}d {s // 3600 % 24}h" if s >= 86400 else f"{s // 3600}h {s // 60 % 60:02d}m" \
        if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def note_long_run(line, eta, args, device, log):
    if not line[2] and eta > 86400:
        log(f"this run is projected to take {fmt_time(eta)} on {device.type} ({args.kimg:g} kimg, --cfg "
            f"{args.cfg}); for a quick experiment use --cfg quick (minutes on a CPU)")
    line[2] = True


def progress(line, cur_nimg, total_nimg, sec_per_kimg, phase, final_res, args, world, device, log):
    """The short line between ticks: kimg done / total, img/s, ETA. The first one also says when
    the whole run is projected to take more than a day here, and names the quicker preset."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # count finished images, not queued ones (once per 30 s)
    now = time.time()
    sec_per_kimg[phase.res] = (now - line[1]) / max(cur_nimg - line[0], 1) * 1000
    eta = estimate_eta(cur_nimg, total_nimg, sec_per_kimg, phase.res, final_res, args, world)
    log(f"kimg {cur_nimg / 1000:8.1f} / {total_nimg / 1000:g} | res {phase.res:4d} alpha {phase.alpha:4.2f} | "
        f"{1000 / sec_per_kimg[phase.res]:7.1f} img/s | ETA {fmt_time(eta)}")
    note_long_run(line, eta, args, device, log)
    line[:2] = cur_nimg, time.time()


# ----------------------------------------------------------------------------------------------
# Training

def new_config(args):
    """The network of a new run: the official one, a paper configuration (--config), and the size
    and ablation flags; flags given explicitly win over the configuration."""
    paper = dict(sg.PAPER_CONFIGS[args.config]["cfg"]) if args.config else {}
    if "mapping_layers" in args.given:
        paper.pop("mapping_layers", None)
    if "noise" in args.given:
        paper.pop("use_noise", None)
    base = sg.StyleGANConfig()
    return sg.StyleGANConfig(**{
        **dict(z_dim=args.w_dim or base.z_dim, w_dim=args.w_dim or base.w_dim,
               mapping_fmaps=args.w_dim or base.mapping_fmaps,
               mapping_layers=base.mapping_layers if args.mapping_layers is None else args.mapping_layers,
               use_noise=not args.no_noise), **paper,
        **dict(resolution=args.final_res, fmap_base=args.fmap_base or base.fmap_base,
               fmap_max=args.fmap_max or base.fmap_max, num_channels=3, mbstd_group_size=args.mbstd_group)})


class Run:
    """What every way out of one process needs, kept current by fit(): where to log, the images
    shown, the last good checkpoint, the open data loader and the signal that asked to stop."""

    def __init__(self, rank):
        self.rank, self.run_dir = rank, None
        self.cur_nimg, self.last_good, self.loader, self.loader_res = 0, (None, 0), None, None
        self.signum, self.signal_time = 0, 0.0

    def log(self, line, may_fail=True):
        """Rank 0 only: stdout and run_dir/log.txt (which a full disk may refuse)."""
        if self.rank != 0:
            return
        print(line, flush=True)
        try:
            with open(os.path.join(self.run_dir, "log.txt"), "a") as f:
                f.write(line.lstrip("\n") + "\n")
        except OSError:
            if may_fail:
                raise

    def fail(self, what, status=1):
        """Ends this process with one line, from whichever rank failed, and a non-zero status."""
        line = (f"stopping at {self.cur_nimg / 1000:.1f} kimg: {what}; nothing was saved from this state. "
                f"Last good checkpoint: {self.last_good[0] or 'none'} ({self.last_good[1] / 1000:.1f} kimg)")
        if self.rank == 0 and self.run_dir:
            self.log(line, may_fail=False)
        else:
            print(f"rank {self.rank}: {line}", file=sys.stderr, flush=True)
        raise SystemExit(status)

    def on_signal(self, signum, frame):
        """SIGINT/SIGTERM: fit() finishes the step and writes a checkpoint, then the process exits."""
        if self.signum:  # a second signal quits at once, unless it is the same one arriving twice
            if time.time() - self.signal_time > 5:  # (from the terminal's process group and from the parent)
                raise KeyboardInterrupt
            return
        self.signum, self.signal_time = signum, time.time()
        self.log(f"\n{signal.Signals(signum).name}: finishing this step and writing a checkpoint "
                 f"(send again to quit at once)")


def describe(e):
    """An exception in one line. A loader worker's error arrives with the worker's whole traceback
    as its message, whose last line is the original error."""
    text = str(e)
    lines = [x.strip() for x in text.splitlines() if x.strip()] or [""]
    return lines[-1] if "Original Traceback" in text else f"{type(e).__name__}: {lines[0]}"


@dataclass
class State:
    """The networks, their optimizers and the counters: what a checkpoint keeps and the loop changes."""
    cfg: sg.StyleGANConfig
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    scalers: list
    cur_nimg: int = 0       # images shown in the steps that were applied
    step: int = 0           # steps taken, dropped fp16 steps included: the seed stream (step_seed)
    seen_nimg: int = 0      # images drawn from the data (ahead of cur_nimg after dropped fp16 steps)
    phase_key: tuple = None  # (res, fading): Adam restarts whenever it changes


def setup_process(rank, args, run):
    """This process's place in the run: rank, world size, device, amp and the run folder (partial
    saves of an earlier crash removed)."""
    rank, world, device = setup_distributed(rank, args)
    args.device = device
    if args.amp == "auto":  # bf16 where the GPU has it natively (Ampere and later), fp16 before
        args.amp = "off" if device.type == "cpu" else \
            "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    if args.memory_format == "auto":
        args.memory_format = auto_layout(device)
    if device.type == "cpu":
        keep_freed_memory()
    kernels.IMPL = args.impl
    if world > 1:  # under torchrun every process ran prepare(), and only rank 0 made the folder
        args.run_dir = broadcast_text(args.run_dir if rank == 0 else "", device)
    run.run_dir = args.run_dir
    stale = remove_partial_files(run.run_dir) if rank == 0 else []
    if stale:
        run.log(f"removed {len(stale)} partial file(s) of saves cut short: {', '.join(stale)}")
    return rank, world, device


def keep_freed_memory():
    """Linux (glibc) only: memory a training step frees stays in the process for the next step's tensors,
    instead of going back to the system and returning as fresh pages the kernel zeroes (M_TRIM_THRESHOLD
    1 GiB; M_MMAP_THRESHOLD at its 32 MiB maximum, as fixing either one freezes the other's adaptive value,
    the mmap threshold's at 128 KiB). The quick start's 32x32 step on 2 cores, 2026-12-02, 6 paired runs:
    4% less wall time, half the system time. The same math: only where tensors are allocated changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator's defaults
        pass


def auto_layout(device):
    """--memory-format auto (see on_device)."""
    return "channels_last" if device.type == "cpu" else "nchw"


# The lowest resolution whose resampling convs run fused (stylegan.FUSED_FROM) per device type. On a
# CPU, where convolutions set the pace, fusing from 16x16 cuts the multiply-adds (one training step of
# the full-size networks, batch 16, 2 cores, 2026-12-01: 10.4 -> 8.4 s at 32x32, 2.63 -> 2.29 s at
# 16x16); at 8x8 oneDNN's transposed conv on 4x4 inputs is slower (0.76 -> 0.84 s), so 8 stays as it
# is. CUDA keeps the official 128: below it, making the 4x4 kernels of the 512-channel layers moves
# more bytes than the convolutions save (bench.py --parts count at 1024: +1.0 GB for -0.3 ms of FLOPs).
FUSED_FROM = {"cpu": 16}
# Where the equalized-lr scales of the layers before an epilogue kernel go (stylegan.scale_in_epilogues):
# on a GPU into the kernels, which multiply what they read anyway (the counted 1024 step: 1.4 GB fewer);
# on a CPU into the weights, as the official code does: there the reference ops would scale the
# activations in extra passes, larger than the weights in small networks or at larger resolutions
# (one step, 2 cores, 2026-12-01: the quick start's at 32x32 79-84 ms with the scales in the weights,
# 86-87 in the epilogues; only the full-size networks at 8x8, whose weights outweigh their activations,
# gain: 681-690 and 659-675 ms).
SCALE_IN_EPILOGUES = {"cpu": False}


def form_of(kind):
    """(the resolution resampling convs are fused from, whether the equalized-lr scales go into the
    epilogue kernels) on a device of this kind ("cpu", "cuda"): FUSED_FROM and SCALE_IN_EPILOGUES,
    else the official threshold and the kernels."""
    return FUSED_FROM.get(kind, sg.FUSED_FROM), SCALE_IN_EPILOGUES.get(kind, True)


def device_form(net, kind):
    """net (G or D) in the form that runs fastest on a device of this kind (form_of). The same
    function in every form. Returns net."""
    fused_from, in_epilogues = form_of(kind)
    sg.fuse_resampling(net, fused_from)
    return sg.scale_in_epilogues(net, in_epilogues)


def on_device(x, device, layout="nchw"):
    """A network or a batch on device, in layout (--memory-format): "nchw", or "channels_last" (NHWC),
    and a network in the device's form (device_form). The same math in any layout and form
    (tests/test_train.py, tests/test_model.py). On a CPU oneDNN's convolutions run faster in
    channels_last (one training step, 2 cores, 2026-12-01: the quick-start networks at 32x32 91 ms
    instead of 111, the full-size ones at 32x32, batch 16, 9.6-10.0 s instead of 10.8-11.4), so auto
    picks it there; CUDA keeps NCHW, the layout the kernels were counted and tuned in, until a GPU run
    has measured the other (.ci/gpu does)."""
    x = x.to(device)
    if isinstance(x, torch.nn.Module):
        device_form(x, torch.device(device).type)
    if layout != "channels_last":
        return x
    if isinstance(x, torch.nn.Module):
        return x.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last)


def match_layout(opt):
    """Adam's moments in their parameters' memory layout. A checkpoint keeps the layout it was saved
    in (another --memory-format, or a GPU run resumed on a CPU), and the fused Adam walks a parameter
    and its moments as flat buffers, so the two must agree (tests/test_train.py)."""
    for p, state in opt.state.items():
        for k, t in state.items():
            if torch.is_tensor(t) and t.shape == p.shape and t.stride() != p.stride():
                state[k] = torch.empty_like(p, dtype=t.dtype).copy_(t)


def build(args, device):
    """A new State, or one resumed from a train.py checkpoint, or NVIDIA's networks (--resume X.pkl:
    the networks only; a new run starts from them)."""
    ckpt = torch.load(args.resume_path, map_location="cpu", weights_only=True) if args.resume_path else None
    nets = ckpt or (sg.read_official(args.official) if args.official else None)
    torch.manual_seed(args.seed)  # identical initial weights on every process
    cfg = sg.StyleGANConfig(**nets["config"]) if nets else new_config(args)
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    if nets:
        for net, key in ((G, "G"), (D, "D"), (G_ema, "G_ema")):
            net.load_state_dict(nets[key])
    G, D, G_ema = (on_device(net, device, args.memory_format) for net in (G, D, G_ema))
    s = State(cfg, G, D, G_ema, adam(G, 0.001), adam(D, 0.001, d_ratio(args)), make_scalers(args))
    if ckpt:
        for opt, key in ((s.opt_G, "opt_G"), (s.opt_D, "opt_D")):
            opt.load_state_dict(ckpt[key])
            match_layout(opt)
        for scaler, key in zip(s.scalers, ("scaler_G", "scaler_D")):
            scaler.load_state_dict(ckpt[key])
        s.cur_nimg, s.step, s.phase_key = ckpt["cur_nimg"], ckpt["step"], tuple(ckpt["phase_key"])
        s.seen_nimg = ckpt.get("seen_nimg", s.cur_nimg)
    return s


def checkpoint(s, phase, args, run, world, snapshot=False):
    """ckpt.pt, and with snapshot=True also G_ema alone (snapshot-KIMG.pt, what sample.py reads).
    Only weights that are finite and the same on every process are written."""
    if not torch.stack([p.isfinite().all() for p in [*s.G.parameters(), *s.D.parameters()]]).all():
        run.fail("non-finite weights")
    if not in_sync((s.G, s.D), world):
        run.fail("processes hold different weights")
    path = os.path.join(run.run_dir, "ckpt.pt")
    if run.rank == 0:
        save_checkpoint(path, dict(
            config=s.cfg.to_dict(), G=s.G.state_dict(), D=s.D.state_dict(), G_ema=s.G_ema.state_dict(),
            opt_G=s.opt_G.state_dict(), opt_D=s.opt_D.state_dict(), scaler_G=s.scalers[0].state_dict(),
            scaler_D=s.scalers[1].state_dict(), cur_nimg=s.cur_nimg, step=s.step, seen_nimg=s.seen_nimg,
            res=phase.res, alpha=phase.alpha, phase_key=list(s.phase_key), args=plain_args(args),
            rng=torch.get_rng_state()))  # for inspection: every step reseeds (step_seed)
    run.last_good = (path, s.cur_nimg)
    if run.rank == 0 and snapshot:
        save_checkpoint(os.path.join(run.run_dir, f"snapshot-{kimg_name(s.cur_nimg)}.pt"),
                        dict(config=s.cfg.to_dict(), G_ema=s.G_ema.state_dict(), res=phase.res,
                             alpha=phase.alpha, cur_nimg=s.cur_nimg))


def loader_workers(args):
    """Data loader worker processes (--workers): by default none on a CPU, where the training step's
    threads already take every core and a worker takes turns with them (the quick start, 2 cores,
    2026-12-02, 16 kimg twice each way: 80.9 / 85.3 s in the trainer's process, 88.9 / 92.4 s with a
    worker; CelebA at 32x32 from its tar 83.7 against 85.9 s); on a GPU data.py's default."""
    if args.workers is not None:
        return args.workers
    return 0 if args.device.type == "cpu" else None


def begin_phase(s, phase, args, run, world, rank, average):
    """At a new (res, fading) phase: a checkpoint at each new resolution, fresh Adam state (official:
    reset whenever lod crosses an integer), and the data loader at the new resolution."""
    key = (phase.res, phase.alpha < 1)
    if key != s.phase_key:
        if s.phase_key is not None and phase.res != s.phase_key[0]:
            checkpoint(s, phase, args, run, world)
        s.opt_G, s.opt_D = adam(s.G, phase.lr), adam(s.D, phase.lr, d_ratio(args))
        s.phase_key, average.check = key, True  # a new set of layers in use: verify all processes agree
    if run.loader is None or run.loader_res != phase.res:
        data.close_loader(run.loader)
        run.loader = data.make_loader(args.dataset.at(phase.res), phase.batch // world, rank=rank,
                                      world_size=world, seed=args.seed, start=s.seen_nimg,
                                      num_workers=loader_workers(args))
        run.loader_res = phase.res
    for opt, ratio in ((s.opt_G, 1.0), (s.opt_D, d_ratio(args))):
        for group in opt.param_groups:
            group["lr"] = phase.lr * ratio


def next_batch(s, phase, args, run, rank, world, device):
    """Latents for D and G, and this process's reals (flipped, faded). The latents are drawn for the
    global batch and sliced, so N processes see what one process would."""
    N = phase.batch // world
    reseed(step_seed(args.seed, 0, s.step), device)
    z_D, z_G = torch.randn(2, phase.batch, s.cfg.z_dim, device=device)[:, rank * N:(rank + 1) * N]
    reseed(step_seed(args.seed, rank + 1, s.step), device)  # per process: noise, mixing, flips
    reals = next(run.loader).to(device, non_blocking=True).float() / 127.5 - 1
    reals = on_device(reals, device, args.memory_format)  # as the networks
    if args.mirror:
        flip = torch.rand(reals.shape[0], device=device) < 0.5
        reals = torch.where(flip[:, None, None, None], reals.flip(3), reals)
    return z_D, z_G, fade_reals(reals, phase.alpha)


class Ticks:
    """The loop's reporting between and at ticks: loss sums over the tick, speed per resolution (for
    the ETA), the last progress line [images, time, long-run warning given], the sample grid's z."""

    def __init__(self, cur_nimg, device, seed, z_dim):
        self.stats = torch.zeros(5, device=device)  # sums over the tick: G loss, D loss, penalty, penalties, steps
        self.sec_per_kimg, self.count = {}, 0
        self.nimg, self.time = cur_nimg, time.time()
        self.line = [cur_nimg, time.time(), False]
        self.z_grid = torch.randn(32, z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)


def crossed(prev_nimg, cur_nimg, every_kimg):
    """Did the images shown pass a multiple of every_kimg between prev and cur?"""
    n = int(every_kimg * 1000)
    return n > 0 and cur_nimg // n > prev_nimg // n


def evaluate(G_ema, phase, args, rank, world, run_dir, log, cur_nimg):
    """metrics.py on the EMA generator at the current resolution; keeps the best-FID snapshot."""
    if phase.alpha < 1:
        log("metrics: skipped while a resolution fades in")
        return
    import metrics
    result = metrics.evaluate(G_ema, args.dataset, metrics=args.metrics.split(","), num=args.metrics_num,
                              res=phase.res, device=args.device, rank=rank, world_size=world)
    if rank != 0:
        return
    log("metrics: " + "  ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)))
    with open(os.path.join(run_dir, "log.jsonl"), "a") as f:
        f.write(json.dumps(dict(kimg=cur_nimg / 1000, res=phase.res, metrics=result), default=float) + "\n")
    best_path = os.path.join(run_dir, "best.json")
    best = json.load(open(best_path)) if os.path.exists(best_path) else None
    if "fid" in result and (best is None or result["fid"] < best["fid"]):
        save_checkpoint(os.path.join(run_dir, "best.pt"), dict(config=G_ema.cfg.to_dict(),
                        G_ema=G_ema.state_dict(), res=phase.res, alpha=1.0, cur_nimg=cur_nimg))
        save_checkpoint(best_path, json.dumps(dict(fid=result["fid"], kimg=cur_nimg / 1000)))


def report(t, s, phase, args, run, world, total_nimg, done):
    """After each step: a progress line when one is due, or at the end of a tick the tick's line,
    log.jsonl row and sample grid, then a snapshot and metrics when they are due."""
    device = args.device
    tick_due = s.cur_nimg - t.nimg >= (args.tick_kimg or TICK_KIMG.get(phase.res, 20)) * 1000 or done
    if not tick_due:
        if time.time() - t.line[1] >= (PROGRESS_SEC if t.line[2] else PROGRESS_SEC / 3):
            progress(t.line, s.cur_nimg, total_nimg, t.sec_per_kimg, phase, s.cfg.resolution, args, world,
                     device, run.log)
        return
    if world > 1:
        dist.all_reduce(t.stats)
    g, d, pen, taken = (t.stats[:4] / t.stats[[4, 4, 3, 4]]).tolist()  # nan when every step overflowed
    t.stats.zero_()
    if not all(map(math.isfinite, (g, d, pen if taken else 0.0))):  # (lazy R1: maybe none this tick)
        run.fail(f"non-finite loss (G {g}, D {d}, penalty {pen})")
    now = time.time()
    sec_kimg = t.sec_per_kimg[phase.res] = (now - t.time) / max(s.cur_nimg - t.nimg, 1) * 1000
    eta = estimate_eta(s.cur_nimg, total_nimg, t.sec_per_kimg, phase.res, s.cfg.resolution, args, world)
    mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
    run.log(f"kimg {s.cur_nimg / 1000:8.1f} | res {phase.res:4d} alpha {phase.alpha:4.2f} batch {phase.batch:3d} | "
            f"G {g:6.3f} D {d:6.3f} {'R1' if args.loss == 'r1' else 'GP'} {pen:7.3f} | "
            f"{sec_kimg:7.2f} s/kimg {1000 / sec_kimg:7.1f} img/s | mem {mem:5.1f} GB | ETA {fmt_time(eta)}")
    note_long_run(t.line, eta, args, device, run.log)
    if run.rank == 0:
        row = dict(kimg=round(s.cur_nimg / 1000, 3), res=phase.res, alpha=round(phase.alpha, 4), batch=phase.batch,
                   lr=phase.lr, loss_G=g, loss_D=d, penalty=pen, sec_per_kimg=round(sec_kimg, 3),
                   img_per_sec=round(1000 / sec_kimg, 1), peak_mem_gb=round(mem, 2), eta_sec=round(eta), time=now)
        with open(os.path.join(run.run_dir, "log.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        with torch.no_grad():
            fakes = torch.cat([s.G_ema(z, phase.res, phase.alpha, noise_mode="const") for z in t.z_grid.split(8)])
        save_grid(fakes, os.path.join(run.run_dir, f"fakes{kimg_name(s.cur_nimg)}.png"))
    t.count += 1
    if (crossed(t.nimg, s.cur_nimg, args.snap_kimg) if args.snap_kimg else t.count % 10 == 0) or done:
        checkpoint(s, phase, args, run, world, snapshot=True)
    if crossed(t.nimg, s.cur_nimg, args.metrics_kimg) or (done and args.metrics_kimg):
        evaluate(s.G_ema, phase, args, run.rank, world, run.run_dir, run.log, s.cur_nimg)
    t.nimg = t.line[0] = s.cur_nimg
    t.time = t.line[1] = time.time()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def fit(rank, args, run):
    """Setup, then the official training loop; returns whether a signal stopped it."""
    rank, world, device = setup_process(rank, args, run)
    s = build(args, device)
    run.cur_nimg, run.last_good = s.cur_nimg, ((args.resume_path, s.cur_nimg) if args.resume_path else (None, 0))
    if rank == 0:
        save_checkpoint(os.path.join(run.run_dir, "args.json"), json.dumps(plain_args(args), indent=1), durable=False)
        fused, in_epilogues = form_of(device.type)
        run.log(f"run {run.run_dir}: {args.data_name} at {s.cfg.resolution}x{s.cfg.resolution}, G "
                f"{sum(p.numel() for p in s.G.parameters()):,} params, {world} process(es) on {device.type}, "
                f"amp {args.amp}, R1 pass {args.r1_precision}, kernels {args.impl}, {args.memory_format}, "
                f"resampling convs fused from {fused}x{fused}, equalized-lr scales in the "
                f"{'epilogues' if in_epilogues else 'weights'}"
                + (f", resumed at {s.cur_nimg / 1000:.1f} kimg" if args.resume_path else ""))
    signal.signal(signal.SIGINT, run.on_signal)  # fit() finishes the step, then checkpoints and stops
    signal.signal(signal.SIGTERM, run.on_signal)
    average, ticks = GradAverage(world, device), Ticks(s.cur_nimg, device, args.seed, s.cfg.z_dim)
    total_nimg, done, stopped = int(args.kimg * 1000), False, False
    step = GraphedStep() if args.cuda_graphs else eager_step
    while not done:
        phase = phase_at(s.cur_nimg, args, world, s.cfg.resolution)
        begin_phase(s, phase, args, run, world, rank, average)
        z_D, z_G, reals = next_batch(s, phase, args, run, rank, world, device)
        average.stops = torch.zeros(1, device=device) + float(run.signum > 0)  # no copy to the device, no sync
        losses = step(s, reals, z_D, z_G, phase, args, average, s.step % args.r1_every == 0)
        average.check = False
        s.step, s.seen_nimg = s.step + 1, s.seen_nimg + phase.batch
        if losses is not None:  # (None: fp16 dropped an update, and its images do not count)
            s.cur_nimg += phase.batch
            ticks.stats += torch.cat([losses, torch.ones(1, device=device)])  # + the step count
        run.cur_nimg = s.cur_nimg
        if device.type == "cpu" or s.step % 16 == 0:  # reading the flag waits for the GPU: a signal acts within 16
            stopped = stopped or bool(average.stops.sum() > 0)
        done = s.cur_nimg >= total_nimg or stopped
        report(ticks, s, phase, args, run, world, total_nimg, done)
    run.log(f"{'stopped' if stopped else 'done'} at {s.cur_nimg / 1000:.1f} kimg; checkpoint "
            f"{run.last_good[0]}; samples {run.run_dir}/fakes*.png"
            + (f"; weights identical on all {world} processes" if world > 1 else "")
            + (f"; exit status {128 + (run.signum or signal.SIGTERM)}" if stopped else ""))
    if world > 1:
        dist.destroy_process_group()
    return stopped


def train(rank, args):
    """One process of the run. However it ends early, it ends here: one line that names the cause
    and the last good checkpoint, the loader's workers shut down (left to the garbage collector,
    they kept the process from ever exiting), and a non-zero exit status: 1 for an error, 128 + N
    after signal N once the checkpoint is written (the shell's convention)."""
    run = Run(rank)
    try:
        stopped = fit(rank, args, run)
    except KeyboardInterrupt:  # a second signal, or Ctrl-C before the handlers were installed
        run.fail("quit at once on a second signal" if run.signum else "interrupted",
                 128 + (run.signum or signal.SIGINT))
    except Exception as e:
        peer = isinstance(e, RuntimeError) and "by peer" in str(e)  # gloo: another process has ended
        run.fail("another process ended (its own line says why)" if peer else describe(e))
    finally:
        data.close_loader(run.loader)
    if stopped:  # a process that saw no signal itself stopped at another's request
        raise SystemExit(128 + (run.signum or signal.SIGTERM))


# ----------------------------------------------------------------------------------------------
# Entry point: check everything a user can get wrong before any process starts.

# Flags a resumed run takes from this command line, never from the checkpoint
RESUME_FRESH = ("resume", "resume_path", "out", "run_dir", "gpus", "data_name", "final_res")

def read_resume(path):
    """A train.py checkpoint's flags and config, its weights checked against the config before any
    process starts. mmap: the tensors are not read here; each process loads them itself."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise SystemExit(f"--resume: {path} is not a readable checkpoint ({type(e).__name__})")
    if not isinstance(ckpt, dict) or "opt_G" not in ckpt:
        raise SystemExit(f"--resume: {path} is not a train.py checkpoint")
    try:
        sg.check_checkpoint(ckpt, path)
    except ValueError as e:
        raise SystemExit(f"--resume: {e}")
    return ckpt


# The flags that shape the network, with the config field each one sets
NET_FLAGS = {"res": "resolution", "fmap_base": "fmap_base", "fmap_max": "fmap_max", "w_dim": "w_dim",
             "mapping_layers": "mapping_layers", "mbstd_group": "mbstd_group_size"}


def check_network_flags(args, config, source):
    """A resumed run keeps its network: a flag given for another one is refused, not ignored."""
    asked = {f"--{k.replace('_', '-')} {getattr(args, k)}": (field, getattr(args, k))
             for k, field in NET_FLAGS.items() if k in args.given}
    if "noise" in args.given:
        asked["--no-noise"] = ("use_noise", not args.no_noise)
    if "config" in args.given:
        asked.update({f"--config {args.config}": (field, v)
                      for field, v in sg.PAPER_CONFIGS[args.config]["cfg"].items()})
    for flag, (field, value) in asked.items():
        if config.get(field) != value:
            refuse(f"{flag}: the network in {source} has {field} {config.get(field)}, and a resumed run "
                   f"keeps its network; leave the flag out, or start a new run without --resume")


def find_resume(args):
    """--resume -> args.resume_path (a train.py checkpoint: the run continues with its flags unless
    a flag says otherwise, and always with its network) or args.official (NVIDIA's pickle: a new
    run fine-tunes it at its resolution, stable phase, fresh optimizers)."""
    args.resume_path, args.official = None, None
    if args.resume == "auto":
        args.resume_path = latest_checkpoint(args.out)
        if args.resume_path is None:
            print(f"--resume auto: no checkpoint in {args.out}; starting a new run")
    elif args.resume:
        if not os.path.isfile(args.resume):
            raise SystemExit(f"--resume: no checkpoint at {args.resume}")
        args.resume_path = args.resume
    if args.resume_path and args.resume_path.endswith(".pkl"):
        try:
            config = sg.read_official(args.resume_path)["config"]
        except ValueError as e:
            raise SystemExit(f"--resume: {e}")
        args.official, args.resume_path = args.resume_path, None
        check_network_flags(args, config, args.official)
        res = args.final_res = args.start_res = config["resolution"]
        print(f"--resume {args.official}: NVIDIA's {res}x{res} networks, fine-tuned at {res}x{res} from 0 kimg")
    if args.resume_path:
        ckpt = read_resume(args.resume_path)
        check_network_flags(args, ckpt["config"], args.resume_path)
        for k, v in ckpt.get("args", {}).items():
            if k not in RESUME_FRESH and k not in args.given:
                setattr(args, k, v)
        args.final_res = ckpt["config"]["resolution"]
        if int(args.kimg * 1000) <= ckpt["cur_nimg"]:
            refuse(f"--kimg {args.kimg:g}: {args.resume_path} has reached {ckpt['cur_nimg'] / 1000:g} kimg "
                   f"already; give a larger --kimg to train on")


def run_folder(args):
    """The run's folder: the checkpoint's when resuming, else a new one in --out, made by rank 0
    alone (under torchrun the others learn its name in fit()). A folder that cannot be written is
    refused now, not at the first checkpoint."""
    folder = (os.path.dirname(args.resume_path) or ".") if args.resume_path else None
    if int(os.environ.get("RANK", 0)) != 0:
        return folder
    if folder:
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            refuse(f"--resume {args.resume_path}: cannot write in {folder} ({e.strerror or e}); copy the run "
                   f"folder somewhere writable and resume from there")
        return folder
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        refuse(f"--out {args.out} is a file; give a folder (it is created if missing)")
    try:
        return new_run_dir(args)
    except OSError as e:
        refuse(f"--out {args.out}: cannot create a run folder there ({e.strerror or e}); give a folder you "
               f"can write to")


def check_cuda_graphs(args, world):
    if not torch.cuda.is_available():
        raise SystemExit("--cuda-graphs needs a CUDA GPU; this machine has none")
    if world > 1:
        raise SystemExit(f"--cuda-graphs runs on one process for now (the gradient all-reduce is not "
                         f"captured); drop it or use --gpus 1 (this run: {world} processes)")
    old = args.amp == "auto" and torch.cuda.get_device_capability()[0] < 8  # auto means fp16 there
    if args.amp == "fp16" or old:
        raise SystemExit("--cuda-graphs cannot replay fp16 loss scaling (the scaler reads the loss scale on "
                         "the host every step); use --amp bf16 on Ampere or later, or --amp off")


def prepare(args):
    find_resume(args)
    if args.data is None:
        source, message = data.default_source()
        print(message)
    else:
        source = args.data  # a bare name such as ffhq means data/ffhq (data.open_dataset)
    try:
        args.dataset = data.open_dataset(source, skip_bad=args.skip_bad)
    except ValueError as e:
        raise SystemExit(f"--data: {e}")
    args.data, args.data_name = source, args.dataset.name
    if not args.resume_path and not args.official:
        preset = CFGS[args.cfg].get("res", args.dataset.resolution)
        args.final_res = args.res or min(preset, args.dataset.resolution)
    res = args.final_res
    if res < 4 or res & (res - 1):
        raise SystemExit(f"--res must be a power of two >= 4, got {res}")
    if args.official and args.dataset.resolution != res:
        raise SystemExit(f"--resume {args.official}: the network is {res}x{res}, the dataset "
                         f"{args.dataset.resolution}x{args.dataset.resolution}; fine-tuning needs data at the "
                         f"network's resolution (python data.py --res {res} prepares it)")
    if res > args.dataset.resolution:
        raise SystemExit(f"--res {res} is above the dataset's resolution {args.dataset.resolution}")
    if args.config and not sg.PAPER_CONFIGS[args.config]["cfg"].get("use_styles", True) and args.mixing > 0:
        raise SystemExit(f"--mixing {args.mixing}: the traditional generator of --config {args.config} has no "
                         f"styles to mix; use --mixing 0")
    if args.start_res > res or args.start_res & (args.start_res - 1) or args.start_res < 4:
        raise SystemExit(f"--start-res must be a power of two between 4 and {res}, got {args.start_res}")
    world = int(os.environ.get("WORLD_SIZE", args.gpus))
    if torch.cuda.is_available() and "RANK" not in os.environ and args.gpus > torch.cuda.device_count():
        raise SystemExit(f"--gpus {args.gpus}, but this machine has {torch.cuda.device_count()} GPU(s)")
    for r in [2 ** s for s in range(int(math.log2(args.start_res)), int(math.log2(res)) + 1)]:
        total = schedule(0, r, r, 0, world, args.batch).batch
        if total % world:
            raise SystemExit(f"the batch at {r}x{r} ({total}) does not split over {world} processes; "
                             f"set --batch to a multiple of {world}")
        if args.mbstd_group > 1 and total // world < args.mbstd_group:
            raise SystemExit(f"--batch {total} gives {total // world} image(s) to each of {world} processes, fewer "
                             f"than the minibatch stddev group (--mbstd-group {args.mbstd_group}); give --batch "
                             f">= {args.mbstd_group * world}, or leave it out (the official table, raised to "
                             f"{MIN_PER_PROCESS} per process)")
    if args.cuda_graphs:
        check_cuda_graphs(args, world)
    if args.r1_every > 1 and args.loss != "r1":
        raise SystemExit(f"--r1-every {args.r1_every}: lazy regularization is for --loss r1")
    if args.metrics_kimg and args.metrics_num < world:
        raise SystemExit(f"--metrics-num {args.metrics_num} is below the {world} processes sharing it")
    if args.metrics_kimg and {"fid", "kid"} & set(args.metrics.split(",")):
        import metrics
        try:  # fail now, not at the first evaluation hours into the run
            metrics.load_inception()
        except (ValueError, OSError, RuntimeError) as e:
            raise SystemExit(f"--metrics {args.metrics}: {e}")
    args.run_dir = run_folder(args)



GRACE_SEC = 5  # after one process fails, the others' time to end by themselves before they are killed
STOPPED = (0, 128 + signal.SIGINT, 128 + signal.SIGTERM)  # finished, or stopped by a signal after a checkpoint


def join_ranks(procs):
    """Waits for all processes. Once one has failed (an exit status not in STOPPED), those still
    running GRACE_SEC later are killed; returns their indices."""
    deadline, killed = math.inf, []
    while any(p.is_alive() for p in procs):
        if time.time() >= deadline:
            killed = [i for i, p in enumerate(procs) if p.is_alive()]
            for i in killed:
                procs[i].kill()
            break
        wait = max(0.0, min(1.0, deadline - time.time()))
        multiprocessing.connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=wait)
        if deadline == math.inf and any(p.exitcode not in (None, *STOPPED) for p in procs):
            deadline = time.time() + GRACE_SEC
    for p in procs:
        p.join()
    return killed


def describe_checkpoint(run_dir):
    """'RUN/ckpt.pt (12.3 kimg)' or 'none', read from the file (mmap: the weights stay on disk)."""
    path = os.path.join(run_dir or "", "ckpt.pt")
    try:
        nimg = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["cur_nimg"]
    except Exception:  # absent or unreadable: no good checkpoint to name
        return "none"
    return f"{path} ({nimg / 1000:.1f} kimg)"


def launch(args):
    """--gpus N: N processes here. A signal to this one is passed on to them. When one fails, the
    others get GRACE_SEC to end by themselves (gloo notices a dead peer; a process blocked in an
    NCCL collective never runs its signal handler) and are then killed. Exit status: 0, 128 + N
    after signal N (once the checkpoint is written), else 1 with one line."""
    import socket
    with socket.socket() as s:  # a free port for the processes to meet on
        s.bind(("127.0.0.1", 0))
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]))
    ctx = torch.multiprocessing.start_processes(train, args=(args,), nprocs=args.gpus, join=False)
    got = []

    def forward(signum, frame):  # `kill PID` reaches only this process: pass it on to the ranks
        got.append(signum)
        for p in ctx.processes:
            if p.is_alive():
                os.kill(p.pid, signum)
    saved = signal.signal(signal.SIGINT, forward), signal.signal(signal.SIGTERM, forward)
    try:
        killed = join_ranks(ctx.processes)
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        for f in ctx.error_files:  # tracebacks of exceptions that train() did not catch: there are none
            with contextlib.suppress(OSError):
                os.remove(f)
    codes = [p.exitcode for p in ctx.processes]
    failed = [f"process {i} " + (f"was killed by {signal.Signals(-c).name}" if c < 0 else f"exited with status {c}")
              for i, c in enumerate(codes) if c not in STOPPED and i not in killed]
    if failed:  # (the processes' own lines say why; one killed from outside has none)
        raise SystemExit(f"train.py: the run has ended: {', '.join(failed)}"
                         + (f"; process(es) {killed} did not end by themselves and were killed" if killed else "")
                         + f". Last good checkpoint: {describe_checkpoint(args.run_dir)}")
    if any(codes):  # all stopped by a signal, their checkpoint written
        raise SystemExit(128 + got[0] if got else max(codes))


def main(argv=None):
    args = get_args(argv)
    prepare(args)
    if args.gpus > 1 and "RANK" not in os.environ:
        launch(args)
    else:  # in this process: leave the kernel switch and signal handlers as they were found
        saved = kernels.IMPL, signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        try:
            train(int(os.environ.get("RANK", 0)), args)
        finally:
            kernels.IMPL = saved[0]
            signal.signal(signal.SIGINT, saved[1])
            signal.signal(signal.SIGTERM, saved[2])
    return args.run_dir



if __name__ == "__main__":
    main()
