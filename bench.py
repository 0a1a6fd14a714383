"""Speed tables of this StyleGAN: the fused kernels, one training step per resolution, the data
loader, and what they add up to over the official FFHQ 1024 schedule (25M images).

    python bench.py --json bench.json        # the full tables on a GPU (a few minutes)
    python bench.py --smoke                  # every part at tiny sizes, on a CPU in seconds
    python bench.py --parts kernels,copy     # some parts only
    python bench.py --parts count            # launches, bytes, FLOPs of a 1024 step; any machine, seconds
    python bench.py --parts rosinality --rosinality ../style-based-gan-pytorch/model.py   # against theirs

Parts, in the order they run:
  count       one training iteration (train.train_step at --res, stable, --batch; the official full-size
              networks; bf16 autocast; the Triton kernels) counted on fake tensors, without running
              anything: kernel launches (torch ops and Triton), GB moved, TFLOP, host syncs, and the
              roofline time of an H100 SXM (4 TB/s, 989 TFLOP/s dense bf16, 3 us per launch) per step
              and per kimg, with the ten most expensive entries.
  copy        device copy bandwidth, y.copy_(x) of a large tensor: the ceiling of a memory-bound op.
  matmul      a large matmul in the training dtype: a measured compute ceiling (MFU falls back to it).
  kernels     kernels.noise_adain and kernels.bias_lrelu (Triton) against the eager PyTorch reference
              and torch.compile of that reference, forward and forward+backward, at StyleGAN's shapes
              per resolution (batch: the official 1-GPU table). Median ms; GB/s counted from the
              MINIMUM bytes an op must move (noise_adain fwd: read x and noise, write y; its backward
              adds read x, dy and noise, write dx; bias_lrelu: read x, write y; read dy, x, write dx);
              and that rate as a percentage of the measured copy bandwidth.
  train       train.train_step (the full official iteration: D step with R1, G step, EMA) per
              resolution, alpha 1, random reals, with the official 1-GPU batch (recipe 1) and the
              8-GPU recipe's per-GPU batch (recipe 8): img/s, sec/kimg, peak memory, FLOPs of one step
              counted by torch.utils.flop_counter (convolutions and matmuls of every forward, backward
              and R1 double backward) and model FLOPs utilisation against the device's peak.
  graphs      train.py --cuda-graphs against eager steps (CUDA only) at each --train-res, official 1-GPU batch:
              the same --steps from the same weights and seeds, twice eager and once graphed; img/s of
              each, and the largest relative difference of any weight from the first eager run, for the
              graphed run and for the second eager run (the run-to-run floor of nondeterministic kernels).
  loader      data.loader_speed beside each resolution (--data, default the built-in dataset).
  scaling     with --gpus N: recipe 8 data-parallel on N processes (train.py's all-reduce) against 1.
  projection  the official schedule (train.schedule: 8x8 start, 600 kimg phases, 25000 kimg) timed
              with the measured per-resolution rates on 1 GPU and on 8 GPUs (linear scaling from the
              recipe-8 rates unless --gpus measured the scaling), next to the official 41 d 4 h (1 V100)
              and 6 d 14 h (8 V100).
  profile     where the time of one training step goes at --profile-res: the top ops and their share.
  rosinality  only when asked (not in the default --parts): one training iteration of our full-size networks
              and of rosinality/style-based-gan-pytorch's (their model.py, --rosinality; never part of this
              repo), side by side in one run per --res-list resolution with the same step (train.d_loss:
              softplus + R1 every step; train.g_loss; Adam), batch, alpha 1 and fp32: median seconds per
              iteration, img/s and ours/theirs, interleaved ours, theirs, ours, ... after one warm-up each.

Output: one table per part on stdout as it is measured, and everything as JSON with --json PATH.
CUDA timings use triton.testing.do_bench (median, L2 flushed between calls); CPU timings a
timer loop (median). TF32 is left as train.py leaves it (recorded in the JSON's meta).
"""
import argparse
import contextlib
import copy
import datetime
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.distributed as dist

# Without a GPU the Triton kernels can only run through the interpreter, which triton reads when it
# is first imported (torch.utils.flop_counter imports it too). Their CPU times mean nothing; the
# column shows that the path works.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402
from torch.utils.weak import WeakIdKeyDictionary  # noqa: E402

import data  # noqa: E402
import kernels  # noqa: E402
import stylegan as sg  # noqa: E402
import train  # noqa: E402

PARTS = ("count", "copy", "matmul", "kernels", "train", "graphs", "loader", "projection", "profile")
ON_REQUEST = ("rosinality",)  # parts that --parts must name (they need a file from elsewhere)
ROSINALITY_URL = "https://github.com/rosinality/style-based-gan-pytorch"
OFFICIAL = {1: 41 * 86400 + 4 * 3600, 8: 6 * 86400 + 14 * 3600}  # seconds, V100, NVlabs/stylegan README
OFFICIAL_KIMG, OFFICIAL_PHASE_KIMG, OFFICIAL_START = 25000, 600, 8
# Dense bf16/fp16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s; first match of the name wins.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("V100", 125.0),
               ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.0))
# --smoke: the tiny network of the tests, two resolutions, CPU-sized everything.
SMOKE_CFG = dict(resolution=16, z_dim=16, w_dim=16, mapping_fmaps=16, fmap_base=64, fmap_max=16)


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--smoke", action="store_true", help="every part at tiny sizes (a 16x16 network, batch <= 8) in seconds")
    a("--json", default=None, help="also write every number to this JSON file")
    a("--parts", default=",".join(PARTS), help=f"comma list of parts to run: {','.join(PARTS)}; "
      f"on request: {','.join(ON_REQUEST)}")
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    a("--kernel-res", default="4-1024", help="resolutions of the kernel table: 'lo-hi' (powers of two) or a list")
    a("--train-res", default="8-1024", help="resolutions of the training table (the schedule's 8..1024)")
    a("--recipes", default="1,8", help="batch recipes: 1 = official 1-GPU batch, 8 = the 8-GPU "
      "recipe's per-GPU batch (total / 8)")
    a("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="kernel table dtype of x "
      "(default: bf16 on CUDA as under training autocast, fp32 on CPU)")
    a("--amp", choices=["bf16", "fp16", "off"], default=None, help="training autocast (default: bf16 on "
      "CUDA, off on CPU; train.py's auto)")
    a("--impl", choices=["auto", "triton", "ref"], default=None, help="kernels inside the training step "
      "(default: auto, as train.py: Triton on CUDA, on a CPU the PyTorch path; the kernel table's "
      "Triton column interprets Triton on a CPU whatever this says)")
    a("--memory-format", choices=["auto", "channels_last", "nchw"], default="auto", help="layout of the "
      "training step's networks and reals (train.py --memory-format; auto: channels_last on a CPU, NCHW on CUDA, "
      "and NCHW in the count, which stands for a GPU run)")
    a("--compile", choices=["auto", "on", "off"], default="auto", help="the torch.compile column "
      "(auto: on CUDA only; inductor takes ~30 s per shape on a CPU)")
    a("--steps", type=int, default=20, help="timed training steps per row (after --warmup)")
    a("--warmup", type=int, default=5, help="untimed training steps per row (cuDNN autotuning, allocator)")
    a("--rep-ms", type=float, default=200, help="kernel timing budget per measurement in ms")
    a("--copy-mb", type=float, default=1024, help="size of the copied tensor for the bandwidth ceiling")
    a("--gpus", type=int, default=1, help="also run the training step data-parallel on this many "
      "processes (GPUs; gloo CPU processes without CUDA) for the scaling efficiency")
    a("--peak-tflops", type=float, default=None, help="device peak for MFU (default: the data sheet value "
      "for known GPUs under bf16/fp16, else the measured matmul rate)")
    a("--data", default="builtin", help="dataset for the loader column (as train.py --data)")
    a("--loader-seconds", type=float, default=3.0, help="seconds of loading per resolution")
    a("--workers", type=int, default=None, help="loader worker processes (default: data.py's)")
    a("--res", type=int, default=None, help="resolution of the count part (default 1024; 16 with --smoke)")
    a("--batch", type=int, default=None, help="batch of the count and rosinality parts (default: the official "
      "1-GPU batch at each resolution, 4 at 1024; 8 with --smoke for count)")
    a("--r1-every", type=int, default=1, help="count part: lazy R1 every K steps (train.py --r1-every); the "
      "average iteration")
    a("--r1-precision", choices=["fp32", "tf32", "amp"], default="fp32", help="count part: precision of the R1 "
      "pass (train.py --r1-precision)")
    a("--profile-res", type=int, default=None, help="resolution of the step profile (default: the "
      "highest training resolution)")
    a("--rosinality", default=None, help=f"model.py of rosinality's port for the rosinality part ({ROSINALITY_URL})")
    a("--res-list", default="8,16,32", help="resolutions of the rosinality part")
    a("--rosinality-steps", type=int, default=2, help="timed iterations per implementation and resolution "
      "in the rosinality part, after one warm-up each (2 cores, official batches: one iteration takes ~4 s at "
      "8x8, ~40 s at 16x16, ~100 s at 32x32, so the default 8,16,32 run takes ~15 min)")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = [s for s in args.parts if s not in PARTS + ON_REQUEST]
    if bad:
        raise SystemExit(f"--parts: unknown part(s) {bad}; choose from {','.join(PARTS + ON_REQUEST)}")
    if "rosinality" in args.parts and not (args.rosinality and os.path.isfile(args.rosinality)):
        print(f"bench.py: error: --rosinality: no model.py of rosinality's port at {args.rosinality!r}; get it "
              f"with `git clone {ROSINALITY_URL}` and pass --rosinality style-based-gan-pytorch/model.py",
              file=sys.stderr)
        raise SystemExit(2)
    args.res_list = parse_res(args.res_list, "--res-list")
    if min(args.res_list) < 8:  # their style mixing draws a crossover among the blocks below the top one
        raise SystemExit(f"--res-list: rosinality's generator mixes styles from 8x8 up, got {args.res_list}")
    if args.rosinality_steps < 1:
        raise SystemExit("--rosinality-steps must be >= 1")
    if "train" not in args.parts and ("projection" in args.parts or args.gpus > 1):
        raise SystemExit("--parts: the projection and --gpus scaling are computed from the train part; add train")
    if args.smoke:  # tiny sizes everywhere unless a flag says otherwise
        given = {t[2:].split("=")[0] for t in (argv if argv is not None else sys.argv[1:]) if t.startswith("--")}
        smoke = {"kernel_res": "4-8", "train_res": "8-16", "steps": 2, "warmup": 1, "rep_ms": 20,
                 "copy_mb": 8, "loader_seconds": 0.3, "workers": 0, "device": "cpu"}
        for k, v in smoke.items():
            if k.replace("_", "-") not in given:
                setattr(args, k, v)
    args.kernel_res, args.train_res = parse_res(args.kernel_res, "--kernel-res"), parse_res(args.train_res, "--train-res")
    if args.res is not None:
        parse_res(str(args.res), "--res")
    if args.batch is not None and args.batch < 1:
        raise SystemExit("--batch must be >= 1")
    try:
        args.recipes = sorted({int(r) for r in args.recipes.split(",")})
    except ValueError:
        raise SystemExit(f"--recipes: expected a comma list of 1 and/or 8, got {args.recipes!r}") from None
    if not set(args.recipes) <= {1, 8}:
        raise SystemExit(f"--recipes: only 1 and 8 are official recipes, got {args.recipes}")
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit("--steps must be >= 1 and --warmup >= 0")
    return args


def parse_res(text, flag):
    try:
        if "-" in text:
            lo, hi = (int(t) for t in text.split("-"))
            res = [2 ** s for s in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]
        else:
            res = [int(t) for t in text.split(",")]
    except ValueError:
        raise SystemExit(f"{flag}: expected 'lo-hi' or a comma list of resolutions, got {text!r}") from None
    if not res or any(r < 4 or r > 1024 or r & (r - 1) for r in res):
        raise SystemExit(f"{flag}: resolutions must be powers of two in 4..1024, got {text!r}")
    return res


# ----------------------------------------------------------------------------------------------
# Timing

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device, rep_ms):
    """Median milliseconds of fn() after one untimed call (which also compiles)."""
    fn()
    sync(device)
    if device.type == "cuda" and kernels.HAS_TRITON:
        import triton.testing
        return triton.testing.do_bench(fn, warmup=max(1, rep_ms // 4), rep=rep_ms, return_mode="median")
    times, end = [], time.perf_counter() + rep_ms / 1000
    while len(times) < 3 or (time.perf_counter() < end and len(times) < 1000):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


class Progress:
    """One line per finished item with the elapsed time and an ETA for the part."""

    def __init__(self, name, total):
        self.name, self.total, self.done, self.t0 = name, total, 0, time.perf_counter()

    def step(self):
        self.done += 1
        spent = time.perf_counter() - self.t0
        eta = spent / self.done * (self.total - self.done)
        return f"[{self.name} {self.done}/{self.total}, {spent:.0f} s, ETA {eta:.0f} s]"


def gbs(nbytes, ms):
    return nbytes / ms / 1e6


# ----------------------------------------------------------------------------------------------
# Ceilings: copy bandwidth and matmul throughput

def bench_copy(device, mb, rep_ms):
    x = torch.randn(int(mb * 2 ** 20) // 4, device=device)
    y = torch.empty_like(x)
    ms = time_ms(lambda: y.copy_(x), device, rep_ms)
    nbytes = 2 * x.numel() * 4  # read x, write y
    r = dict(bytes=nbytes, ms=ms, gb_s=gbs(nbytes, ms))
    print(f"copy: {nbytes / 2**20:.0f} MiB moved in {ms:.3f} ms = {r['gb_s']:.1f} GB/s (the 100% of the kernel table)")
    return r


def bench_matmul(device, dtype, n, rep_ms):
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: a @ b, device, rep_ms)
    r = dict(n=n, dtype=str(dtype).removeprefix("torch."), ms=ms, tflops=2 * n ** 3 / ms / 1e9)
    print(f"matmul: {n}^3 {r['dtype']} in {ms:.3f} ms = {r['tflops']:.3g} TFLOP/s")
    return r


# ----------------------------------------------------------------------------------------------
# Kernel table

def kernel_cases(cfg, res, dtype, device, smoke):
    """The two fused ops at resolution res: (name, make_inputs, minimum bytes fwd, fwd+bwd).
    Channels nf(log2(res) - 1) as in G's and D's blocks; batch from the official 1-GPU table."""
    N = 2 if smoke else train.BATCH[1][res]
    C = cfg.nf(int(math.log2(res)) - 1)
    esize = torch.finfo(dtype).bits // 8
    x_bytes, noise_bytes = N * C * res * res * esize, N * res * res * esize

    def adain_inputs():
        f32 = dict(device=device, dtype=torch.float32)
        x = torch.randn(N, C, res, res, device=device, dtype=dtype, requires_grad=True)
        noise = torch.randn(N, 1, res, res, device=device, dtype=dtype)
        params = [torch.randn(C, **f32) * 0.1, torch.randn(C, **f32) * 0.1,  # noise_weight, bias
                  torch.randn(N, C, **f32) + 1, torch.randn(N, C, **f32)]     # scale, shift (fp32 styles)
        return [x, noise] + [p.requires_grad_(True) for p in params]

    def lrelu_inputs():
        x = torch.randn(N, C, res, res, device=device, dtype=dtype, requires_grad=True)
        return [x, torch.zeros(C, device=device, dtype=torch.float32, requires_grad=True)]

    return [("noise_adain", (N, C, res, res), adain_inputs, kernels.noise_adain, kernels.noise_adain_ref,
             2 * x_bytes + noise_bytes, 5 * x_bytes + 2 * noise_bytes),
            ("bias_lrelu", (N, C, res, res), lrelu_inputs, kernels.bias_lrelu, kernels.bias_lrelu_ref,
             2 * x_bytes, 5 * x_bytes)]


def measure_op(fn, inputs, backward, device, rep_ms):
    """Median ms of fn(*inputs) (forward) or of forward + autograd.grad of every input that needs one."""
    if not backward:
        with torch.no_grad():
            return time_ms(lambda: fn(*inputs), device, rep_ms)
    wrt = [t for t in inputs if t.requires_grad]
    y = fn(*inputs)
    dy = torch.randn_like(y)
    return time_ms(lambda: torch.autograd.grad(fn(*inputs), wrt, dy), device, rep_ms)


def bench_kernels(args, cfg, device, dtype, copy_gbs):
    use_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    rows = []
    cases = [c for res in args.kernel_res for c in kernel_cases(cfg, res, dtype, device, args.smoke)]
    progress = Progress("kernels", 2 * len(cases))
    print(f"\nkernels ({str(dtype).removeprefix('torch.')}, {device.type}"
          f"{', Triton interpreted: its times are meaningless' if device.type == 'cpu' else ''})")
    print(f"{'op':12s} {'shape':>20s} {'pass':>7s} | {'triton ms':>9s} {'GB/s':>7s} {'%copy':>5s} | "
          f"{'eager ms':>9s} {'GB/s':>7s} {'%copy':>5s} | {'compile ms':>10s} {'GB/s':>7s} {'%copy':>5s}")
    for name, shape, make_inputs, op, ref, bytes_fwd, bytes_fb in cases:
        inputs = make_inputs()
        if use_compile:
            torch._dynamo.reset()  # a fresh static-shape compile per shape (no recompile limit)
        impls = {"triton": lambda *t: op(*t, impl="triton"), "eager": ref,
                 "compile": torch.compile(ref, dynamic=False) if use_compile else None}
        for backward, nbytes in ((False, bytes_fwd), (True, bytes_fb)):
            row = {"op": name, "res": shape[-1], "shape": list(shape), "dtype": str(dtype).removeprefix("torch."),
                   "pass": "fwd+bwd" if backward else "fwd", "bytes": nbytes}
            cols = []
            for impl, fn in impls.items():
                if fn is None:
                    row[impl], row[f"{impl}_note"] = None, f"skipped (--compile {args.compile} on {device.type})"
                else:
                    try:
                        ms = measure_op(fn, inputs, backward, device, args.rep_ms)
                        row[impl] = dict(ms=ms, gb_s=gbs(nbytes, ms), pct_copy=100 * gbs(nbytes, ms) / copy_gbs)
                    except Exception as e:  # no Triton, or inductor failed: say why, keep going
                        row[impl], row[f"{impl}_note"] = None, f"{type(e).__name__}: {str(e)[:200]}"
                m = row[impl]
                cols.append(f"{m['ms']:9.4f} {m['gb_s']:7.1f} {m['pct_copy']:5.1f}" if m else f"{'n/a':>23s}")
            rows.append(row)
            print(f"{name:12s} {'x'.join(map(str, shape)):>20s} {row['pass']:>7s} | {cols[0]} | {cols[1]} | "
                  f"{cols[2]:>24s}  {progress.step()}")
    notes = sorted({r[k] for r in rows for k in r if k.endswith("_note")})
    for note in notes:
        print(f"  n/a: {note}")
    return rows


# ----------------------------------------------------------------------------------------------
# Training table

def recipe_batch(recipe, res, smoke):
    """Per-GPU batch: the official 1-GPU table, or the 8-GPU table's total split over 8 GPUs."""
    if smoke:
        return 8 if recipe == 1 else 4
    return train.BATCH[1][res] if recipe == 1 else train.BATCH[8][res] // 8


class FlopCounter(TorchDispatchMode):
    """FLOPs of the convolutions and matmuls run inside it, forward and backward, with the formulas
    of torch.utils.flop_counter. (Its FlopCounterMode also tracks modules through autograd hooks,
    which fails on the no_grad generator forward inside train_step.)"""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def step_args(cfg, device, amp, layout, *flags):
    """train.py's arguments for a training step of cfg's network on device: amp, --memory-format layout."""
    targs = train.get_args(["--data", "builtin", "--res", str(cfg.resolution), "--memory-format", layout,
                            *flags])
    targs.device, targs.amp = device, amp
    return targs


def make_nets(cfg, targs):
    """G, D and G_ema in the layout train.py would give them with targs."""
    torch.manual_seed(0)
    nets = sg.Generator(cfg), sg.Discriminator(cfg)
    G, D = (train.on_device(net, targs.device, targs.memory_format) for net in nets)
    return G, D, copy.deepcopy(G).eval().requires_grad_(False)


def peak_memory_gb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30, "torch.cuda.max_memory_allocated"
    import resource  # CPU: the process's resident high-water mark (Linux reports KiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "process max RSS (whole run)"


def bench_step(nets, targs, res, batch, steps, warmup, count_flops=True, world=1):
    """Times train.train_step at (res, batch) per process: img/s, sec/kimg, peak memory, FLOPs per step."""
    G, D, G_ema = nets
    device = targs.device
    phase = train.Phase(res, 1.0, batch, train.LR.get(res, 0.001))
    opt_G, opt_D = train.adam(G, phase.lr), train.adam(D, phase.lr)
    scalers = train.make_scalers(targs)
    reals = train.on_device(torch.rand(batch, G.cfg.num_channels, res, res) * 2 - 1, device, targs.memory_format)
    average = train.GradAverage(world, device)

    def step():
        z = torch.randn(2, batch, G.cfg.z_dim, device=device)
        train.train_step(G, D, G_ema, opt_G, opt_D, scalers, reals, z[0], z[1], phase, targs, average)

    flops = None
    for i in range(max(warmup, int(count_flops))):
        if i == 0 and count_flops:  # the first untimed step also counts the FLOPs
            with FlopCounter() as counter:
                step()
            flops = counter.flops
        else:
            step()
    sync(device)
    if world > 1:
        dist.barrier()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    sec = (time.perf_counter() - t0) / steps
    mem, mem_kind = peak_memory_gb(device)
    return dict(res=res, batch=batch, sec_per_step=sec, img_s=batch / sec, sec_per_kimg=1000 * sec / batch,
                peak_mem_gb=mem, mem_kind=mem_kind, flops_per_step=flops)


def bench_train(args, cfg, device, peak_tflops, loader_rates):
    targs = step_args(cfg, device, args.amp, args.memory_format)
    nets = make_nets(cfg, targs)
    rows = []
    jobs = [(res, r) for res in args.train_res for r in args.recipes]
    progress = Progress("train", len(jobs))
    print(f"\ntraining step (train.train_step: D + R1, G, EMA) on 1 {device.type} device, amp {args.amp}, "
          f"kernels {args.impl}, {args.memory_format}; MFU against {peak_tflops['tflops']:.3g} TFLOP/s "
          f"({peak_tflops['source']})")
    print(f"{'res':>5s} {'recipe':>6s} {'batch':>5s} | {'img/s':>8s} {'s/kimg':>8s} {'mem GB':>7s} | "
          f"{'GFLOP/step':>10s} {'TFLOP/s':>8s} {'MFU %':>6s} | {'loader img/s':>12s}")
    for res, recipe in jobs:
        batch = recipe_batch(recipe, res, args.smoke)
        row = bench_step(nets, targs, res, batch, args.steps, args.warmup)
        tflops = row["flops_per_step"] / row["sec_per_step"] / 1e12
        row.update(recipe=recipe, tflops=tflops, mfu=100 * tflops / peak_tflops["tflops"],
                   loader_img_s=loader_rates.get(res))
        rows.append(row)
        loader = f"{row['loader_img_s']:12.1f}" if row["loader_img_s"] is not None else f"{'-':>12s}"
        print(f"{res:5d} {recipe:6d} {batch:5d} | {row['img_s']:8.1f} {row['sec_per_kimg']:8.2f} "
              f"{row['peak_mem_gb']:7.2f} | {row['flops_per_step'] / 1e9:10.2f} {tflops:8.3f} {row['mfu']:6.2f} | "
              f"{loader}  {progress.step()}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"  memory: {rows[0]['mem_kind']}; FLOPs: torch.utils.flop_counter over one whole step "
          f"(convs and matmuls of G and D forward, backward and the R1 double backward)")
    return rows


def graphs_run(cfg, device, amp, res, batch, steps, graphs, layout="nchw"):
    """Seconds per step and the final weights of `steps` training steps from make_nets' weights,
    eager (train.eager_step) or graphed (train.GraphedStep), the same seed for each step."""
    targs = step_args(cfg, device, amp, layout, *["--cuda-graphs"] * graphs)
    G, D, G_ema = make_nets(cfg, targs)
    phase = train.Phase(res, 1.0, batch, train.LR.get(res, 0.001))
    s = train.State(cfg, G, D, G_ema, train.adam(G, phase.lr), train.adam(D, phase.lr), train.make_scalers(targs),
                    phase_key=(res, False))
    step = train.GraphedStep() if graphs else train.eager_step
    torch.manual_seed(0)
    reals = train.on_device(torch.rand(batch, cfg.num_channels, res, res) * 2 - 1, device, targs.memory_format)
    times = []
    for i in range(steps):
        torch.manual_seed(i)
        z = torch.randn(2, batch, cfg.z_dim, device=device)
        sync(device)
        t0 = time.perf_counter()
        step(s, reals, z[0], z[1], phase, targs, None, True)
        sync(device)
        times.append(time.perf_counter() - t0)
    warm = train.GraphedStep.WARMUP + 1  # not timed: the graphed run's eager warm-up and its capture
    return statistics.median(times[warm:]), [t.detach().clone() for t in [*G.parameters(), *D.parameters()]]


def bench_graphs(args, cfg, device):
    if device.type != "cuda":
        print("\ngraphs: skipped (CUDA graphs need a CUDA GPU)")
        return dict(rows=[], note="skipped: CUDA graphs need a CUDA GPU")
    steps = max(args.steps, 2 * train.GraphedStep.WARMUP + 3)
    print(f"\nCUDA graphs (train.py --cuda-graphs) against eager steps, amp {args.amp}: {steps} steps each from "
          f"the same weights and seeds; weight difference: the largest over weight tensors of "
          f"max|w - w_eager| / max|w_eager|")
    print(f"{'res':>5s} {'batch':>5s} | {'eager img/s':>11s} {'graphs img/s':>12s} {'x':>6s} | "
          f"{'graphs diff':>11s} {'eager rerun diff':>16s}")
    rows, progress = [], Progress("graphs", len(args.train_res))
    for res in args.train_res:
        batch = recipe_batch(1, res, args.smoke)
        runs = (graphs_run(cfg, device, args.amp, res, batch, steps, graphs, args.memory_format)
                for graphs in (False, False, True))
        (sec_e, w_e), (_, w_e2), (sec_g, w_g) = runs
        diff = [max(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(w, w_e))
                for w in (w_g, w_e2)]
        rows.append(dict(res=res, batch=batch, eager_img_s=batch / sec_e, graphs_img_s=batch / sec_g,
                         speedup=sec_e / sec_g, graphs_diff=diff[0], eager_rerun_diff=diff[1]))
        r = rows[-1]
        print(f"{res:5d} {batch:5d} | {r['eager_img_s']:11.1f} {r['graphs_img_s']:12.1f} {r['speedup']:6.2f} | "
              f"{diff[0]:11.2e} {diff[1]:16.2e}  {progress.step()}")
        torch.cuda.empty_cache()
    return dict(rows=rows)


def bench_loader(args, res_list, batch_of):
    try:
        dataset = data.open_dataset(args.data)
    except ValueError as e:
        raise SystemExit(f"--data: {e}") from None
    rates = {}
    print(f"\nloader ({dataset.name}, {args.workers if args.workers is not None else data.default_workers()} "
          f"workers)")
    progress = Progress("loader", len(res_list))
    for res in res_list:
        rates[res] = data.loader_speed(dataset.at(res), batch_of(res), seconds=args.loader_seconds,
                                       num_workers=args.workers)
        print(f"{res:5d}: {rates[res]:9.1f} img/s at batch {batch_of(res)}  {progress.step()}")
    return rates


# ----------------------------------------------------------------------------------------------
# Scaling over --gpus processes (train.py's data parallel: one all-reduce per network per step)

def scaling_worker(rank, world, port, cfg, opts, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = opts["device_type"] == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:  # CPU processes share the cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    kernels.IMPL = opts["impl"]
    targs = step_args(cfg, device, opts["amp"], opts["memory_format"])
    nets = make_nets(cfg, targs)
    rows = []
    for res in opts["train_res"]:
        r = bench_step(nets, targs, res, recipe_batch(8, res, opts["smoke"]), opts["steps"], opts["warmup"],
                       count_flops=False, world=world)
        sec = torch.tensor([r["sec_per_step"]], device=device)
        dist.all_reduce(sec, op=dist.ReduceOp.MAX)  # the slowest process sets the pace
        rows.append(dict(res=res, batch_per_gpu=r["batch"], img_s=world * r["batch"] / float(sec)))
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def bench_scaling(args, cfg, device, train_rows):
    """Recipe 8 on --gpus processes against the same per-GPU batch on one: efficiency =
    img/s on N / (N x img/s on 1)."""
    single = {r["res"]: r["img_s"] for r in train_rows if r["recipe"] == 8}
    if device.type == "cuda" and torch.cuda.device_count() < args.gpus:
        raise SystemExit(f"--gpus {args.gpus}, but this machine has {torch.cuda.device_count()} GPU(s)")
    import socket
    import tempfile
    with socket.socket() as sock:  # a free port for the processes to meet on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opts = dict(device_type=device.type, impl=args.impl, amp=args.amp, memory_format=args.memory_format,
                train_res=sorted(single), smoke=args.smoke, steps=args.steps, warmup=args.warmup)
    print(f"\nscaling: the 8-GPU recipe's per-GPU batch on {args.gpus} {device.type} processes "
          f"({'NCCL' if device.type == 'cuda' else 'gloo'}) against 1")
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "scaling.json")
        torch.multiprocessing.spawn(scaling_worker, args=(args.gpus, port, cfg, opts, out_path), nprocs=args.gpus)
        with open(out_path) as f:
            rows = json.load(f)
    for row in rows:
        row.update(img_s_1=single[row["res"]], efficiency=row["img_s"] / (args.gpus * single[row["res"]]))
        print(f"{row['res']:5d}: {row['img_s']:9.1f} img/s on {args.gpus} vs {row['img_s_1']:9.1f} on 1, "
              f"batch {row['batch_per_gpu']}/GPU: efficiency {100 * row['efficiency']:.1f}%")
    return dict(gpus=args.gpus, rows=rows)


# ----------------------------------------------------------------------------------------------
# Projection of the official schedule

def schedule_kimg(final_res, start_res=OFFICIAL_START, phase_kimg=OFFICIAL_PHASE_KIMG, total_kimg=OFFICIAL_KIMG):
    """{res: kimg trained at res (fade-ins count at the new resolution)} over the schedule."""
    kimg = {}
    for k in range(int(total_kimg)):  # the phases are whole kimg, so one lookup per kimg is exact
        res = train.schedule(k * 1000, final_res, start_res, phase_kimg).res
        kimg[res] = kimg.get(res, 0) + 1
    return kimg


def fmt_days(s):
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h" if s >= 86400 else f"{s / 3600:.1f} h"


def project(train_rows, final_res, scaling=None):
    """Time of the official schedule from the measured sec/kimg: 1 GPU with the 1-GPU batch, 8 GPUs
    with the 8-GPU recipe's per-GPU rate times 8 times the scaling efficiency (measured per
    resolution by the scaling part, else 1)."""
    kimg = schedule_kimg(final_res)
    rate = {(r["res"], r["recipe"]): r["img_s"] for r in train_rows}
    eff = {r["res"]: r["efficiency"] for r in scaling["rows"]} if scaling else {}
    out = dict(final_res=final_res, total_kimg=OFFICIAL_KIMG, kimg_per_res=kimg,
               scaling_efficiency={r: eff.get(r, 1.0) for r in kimg},
               scaling_source=f"measured on {scaling['gpus']} processes" if scaling else "assumed linear")
    print(f"\nprojection: the official schedule to {final_res}x{final_res} ({OFFICIAL_KIMG} kimg, "
          f"{OFFICIAL_PHASE_KIMG} kimg phases from {OFFICIAL_START}x{OFFICIAL_START})")
    for gpus, recipe in ((1, 1), (8, 8)):
        missing = [r for r in kimg if (r, recipe) not in rate]
        if missing:
            out[f"gpus_{gpus}"] = None
            out[f"gpus_{gpus}_note"] = f"no recipe-{recipe} rate measured at {missing}"
            print(f"  {gpus} GPU(s): not projected, {out[f'gpus_{gpus}_note']}")
            continue
        per_res = {r: k * 1000 / (rate[(r, recipe)] * gpus * (eff.get(r, 1.0) if gpus > 1 else 1.0))
                   for r, k in kimg.items()}
        total = sum(per_res.values())
        out[f"gpus_{gpus}"] = dict(seconds=total, sec_per_kimg=total / OFFICIAL_KIMG, seconds_per_res=per_res,
                                   official_seconds=OFFICIAL[gpus], speedup=OFFICIAL[gpus] / total)
        parts = ", ".join(f"{r}: {s / 3600:.1f} h" for r, s in sorted(per_res.items()))
        print(f"  {gpus} GPU(s): {fmt_days(total)} ({total / OFFICIAL_KIMG:.2f} s/kimg on average) vs official "
              f"{fmt_days(OFFICIAL[gpus])} on {gpus} V100 ({OFFICIAL[gpus] / OFFICIAL_KIMG:.1f} s/kimg): "
              f"{OFFICIAL[gpus] / total:.2f}x  [{parts}]")
    print(f"  8 GPUs: the measured per-GPU rate x 8, scaling {out['scaling_source']}"
          + ("" if not scaling or set(eff) >= set(kimg) else " (1.0 where not measured)"))
    return out


# ----------------------------------------------------------------------------------------------
# Count of one training iteration on fake tensors (torch._subclasses.FakeTensorMode: shapes and
# dtypes, no data): every kernel launch with the bytes it moves and its FLOPs, and the time they
# take at the roofline of an H100. Nothing runs on a device, so it takes seconds anywhere.
#
# The networks and the step live on fake CPU tensors (a CPU-only torch cannot fake CUDA tensors
# through autograd) under CPU bf16 autocast, which casts this model's convolutions and matmuls as
# CUDA's does (the ops CUDA's list adds in fp32, softplus and rsqrt, meet fp32 tensors here). The
# Triton path is taken as on a GPU; its launches are recorded and not run. What a GPU run keeps on
# the host (tensors made without a device: the style mixing draw, Adam's step counts) is tracked,
# so that its arithmetic is not counted as launches nor its reads as host syncs.

ROOFLINE = dict(tb_s=4.0, tflops=989.0, launch_us=3.0,  # H100 SXM: HBM3, dense bf16, one launch
                tflops_tf32=494.7, tflops_fp32=66.9)  # fp32 math: TF32 tensor cores where allowed, else CUDA cores
# CUDA's multi_tensor_apply (the _foreach_ ops of Adam and the EMA): at most this many tensors per
# launch by the number of tensor lists, and 320 blocks of 65536 elements.
FOREACH_TENSORS, FOREACH_BLOCKS, FOREACH_CHUNK = (110, 64, 48, 36, 30), 320, 65536
aten = torch.ops.aten
NO_LAUNCH = {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default,
             aten.lift_fresh.default, aten._unsafe_view.default}  # allocations and views
HOST_FACTORIES = {torch.rand, torch.randn, torch.randint, torch.tensor, torch.zeros, torch.ones, torch.full,
                  torch.empty, torch.arange, torch.scalar_tensor}


def distinct_tensors(tree):
    return list({id(t): t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)}.values())


def touched_bytes(t):
    """Bytes a kernel reads or writes of t: its span in memory, or its elements where that is less
    (a channel slice of a batch spans nearly the whole batch, an expanded tensor spans one row)."""
    if t.numel() == 0:
        return 0
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return min(span, t.numel()) * t.element_size()


def bytes_of(func, args, ins, out):
    """Bytes an op moves: each distinct tensor read plus each written (touched_bytes). A convolution
    backward runs one kernel per gradient: dx reads dy and w, dw reads dy and x (w only for its
    shape), db reads dy. Fused Adam reads the parameters, gradients and both moments, and writes
    all but the gradients."""
    if func is aten._fused_adam_.default:
        return sum(map(touched_bytes, distinct_tensors(args[:4]) + distinct_tensors((args[0], args[2], args[3]))))
    if func is not aten.convolution_backward.default:
        return sum(map(touched_bytes, ins + distinct_tensors(out)))
    dy, x, w, mask = args[0], args[1], args[2], args[10]
    reads = ((dy, w), (dy, x), (dy,))
    return sum(sum(map(touched_bytes, (*reads[i], out[i]))) for i in range(3) if mask[i])


def launches_of(func, args):
    """Kernels one op launches on a GPU: one, but one per gradient a convolution backward computes,
    and the launches CUDA's multi_tensor_apply packs a _foreach_ op's (or fused Adam's) tensor lists
    into (fused Adam's list of step counts is read, not chunked)."""
    if func is aten.convolution_backward.default:
        return max(1, sum(args[10]))  # output_mask: grad input, grad weight, grad bias
    if func.name().startswith(("aten::_foreach_", "aten::_fused_adam")):
        lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
        if func.name().startswith("aten::_fused_adam"):
            lists = [a for a in lists if a[0].dim() > 0]
        blocks = sum(-(-t.numel() // FOREACH_CHUNK) for t in lists[0])
        per_launch = FOREACH_TENSORS[min(len(lists), len(FOREACH_TENSORS)) - 1]
        return max(1, -(-len(lists[0]) // per_launch), -(-blocks // FOREACH_BLOCKS))
    return 1


def op_name(func, args):
    """The op's name; a convolution also says its kind. No filter of this model is larger than 4x4,
    so a larger one is a weight gradient run as a convolution over a gradient map (torch's double
    backward), and a depthwise one is the blur."""
    name = str(func).removesuffix(".default")
    if func is aten.convolution.default:
        w, transposed, groups = args[1], args[6], args[8]
        kind = ("depthwise" if groups > 1 else f"{w.shape[-2]}x{w.shape[-1]}" if w.shape[-1] <= 4
                else "filter = a gradient map" + (", one group" if w.shape[0] == 1 else ""))
        kind += ", transposed" if transposed else ""
        name = f"{name} ({kind})"
    return name


class LaunchCounter(TorchDispatchMode):
    """Rows (name, launches, bytes, FLOPs) of every op that launches a kernel on the device: bytes
    from bytes_of, FLOPs from flop_registry; views and allocations launch nothing. Reads of a device
    value on the host (.item(), bool(), .cpu(), .tolist()) are host syncs; fake data has no value,
    so they read as 1 (the style mixing draw: mixing on, crossover at layer 1)."""

    def __init__(self):
        super().__init__()
        self.rows, self.syncs, self.host, self.making_host = [], [], WeakIdKeyDictionary(), False

    def add(self, name, launches, nbytes, flops, tflops=ROOFLINE["tflops"]):
        self.rows.append((name, launches, nbytes, flops, tflops))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ins = distinct_tensors((args, kwargs))
        on_device = [t for t in ins if t not in self.host]
        if func is aten._local_scalar_dense.default:
            if on_device:
                self.syncs.append("item")
            return True if ins[0].dtype == torch.bool else 1.0 if ins[0].is_floating_point() else 1
        out = func(*args, **kwargs)
        outs = distinct_tensors(out)
        if self.making_host or (ins and not on_device):  # host arithmetic: no launch
            for t in outs:
                self.host[t] = True
            return out
        if func.is_view or func in NO_LAUNCH or not (outs or func._schema.is_mutable):
            return out
        flops = flop_registry.get(func._overloadpacket)
        flops = flops(*args, **kwargs, out_val=out) if flops else 0
        name, tflops = op_name(func, args), ROOFLINE["tflops"]
        if flops and ins[0].dtype not in (torch.bfloat16, torch.float16):  # fp32 math (the R1 pass)
            tf32 = (torch.backends.cudnn if "convolution" in name else torch.backends.cuda.matmul).allow_tf32
            name, tflops = f"{name}, {'tf32' if tf32 else 'fp32'}", ROOFLINE["tflops_tf32" if tf32 else "tflops_fp32"]
        self.add(name, launches_of(func, args), bytes_of(func, args, ins, out), flops, tflops)
        return out


class HostSide(TorchFunctionMode):
    """Marks the tensors a GPU run would make on the host (a factory call without a device) for
    the LaunchCounter, and records the host reads that a CPU tensor does not dispatch."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.cpu, torch.Tensor.tolist):
            if args[0] not in self.counter.host:
                self.counter.syncs.append(func.__name__)
            if func is torch.Tensor.tolist:  # fake data has no values: ones of the right shape
                return nested_ones(args[0].shape)
        if func not in HOST_FACTORIES or kwargs.get("device") is not None:
            return func(*args, **kwargs)
        self.counter.making_host = True
        try:
            return func(*args, **kwargs)
        finally:
            self.counter.making_host = False


def nested_ones(shape):
    return 1 if not shape else [nested_ones(shape[1:]) for _ in range(shape[0])]


class RecordedKernel:
    """Stands in for a Triton kernel: kernel[grid](...) records one launch and runs nothing. Its
    bytes are those of the distinct tensors passed (a placeholder passed twice counts once)."""

    def __init__(self, name, counter):
        self.name, self.counter = name, counter

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            nbytes = sum(map(touched_bytes, distinct_tensors((args, kwargs))))
            self.counter.add(f"triton {self.name}", 1, nbytes, 0)
        return launch


@contextlib.contextmanager
def fake_gpu(counter, impl):
    """Fake tensors, with kernels.py taking the Triton path (`impl`) and recording its launches."""
    names = [n for n in dir(kernels) if n.endswith("_kernel")]
    saved = {n: getattr(kernels, n) for n in names}, kernels.INTERPRET, kernels.IMPL
    try:
        for n in names:
            setattr(kernels, n, RecordedKernel(n, counter))
        kernels.INTERPRET, kernels.IMPL = True, impl  # lets the Triton path take CPU tensors
        kernels.blur_filter.cache_clear()  # the filter is cached per device: a real one must not meet fakes
        kernels._mask_values.cache_clear()  # (and so are the leaky ReLU's mask values)
        with FakeTensorMode():
            yield
    finally:
        for n, kernel in saved[0].items():
            setattr(kernels, n, kernel)
        kernels.INTERPRET, kernels.IMPL = saved[1:]
        kernels.blur_filter.cache_clear()  # nor a fake one outlive the count
        kernels._mask_values.cache_clear()


def count_step(cfg, res, batch, impl="auto", amp="bf16", r1_every=1, r1_precision="fp32", layout="nchw"):
    """One train.train_step (D step with R1, G step, EMA) at res, alpha 1, counted on fake tensors
    after one uncounted step (which creates Adam's state). Returns the LaunchCounter. Lazy R1
    (r1_every K > 1): the average iteration, 1/K of one with R1's own D step, (K-1)/K of one without."""
    if r1_every > 1:
        counts = [count_iteration(cfg, res, batch, impl, amp, r1_every, r1_precision, r, layout) for r in (True, False)]
        counter = LaunchCounter()
        for c, weight in zip(counts, (1 / r1_every, 1 - 1 / r1_every)):
            counter.rows += [(n, k * weight, b * weight, f * weight, t) for n, k, b, f, t in c.rows]
            counter.syncs += c.syncs
        return counter
    return count_iteration(cfg, res, batch, impl, amp, r1_every, r1_precision, layout=layout)


def count_iteration(cfg, res, batch, impl, amp, r1_every, r1_precision, regularize=True, layout="nchw"):
    counter = LaunchCounter()
    with fake_gpu(counter, impl):
        G, D, G_ema = sg.Generator(cfg), sg.Discriminator(cfg), sg.Generator(cfg).eval().requires_grad_(False)
        for net in (G, D, G_ema):  # the count stands for a GPU run
            train.device_form(net, "cuda")
        if layout == "channels_last":  # train.on_device's layout (Module.to cannot swap fake parameters)
            for t in [t for net in (G, D, G_ema) for t in (*net.parameters(), *net.buffers()) if t.ndim == 4]:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
        targs = step_args(cfg, torch.device("cpu"), amp, layout)
        targs.r1_every, targs.r1_precision = r1_every, r1_precision
        phase = train.Phase(res, 1.0, batch, train.LR.get(res, 0.001))
        opt_G, opt_D = train.adam(G, phase.lr), train.adam(D, phase.lr, train.d_ratio(targs))
        scalers = train.make_scalers(targs)
        reals = torch.rand(batch, cfg.num_channels, res, res) * 2 - 1
        if layout == "channels_last":
            reals = reals.contiguous(memory_format=torch.channels_last)
        for _ in range(2):
            counter.rows.clear()
            counter.syncs.clear()
            z = torch.randn(2, batch, cfg.z_dim)
            with HostSide(counter), counter:
                train.train_step(G, D, G_ema, opt_G, opt_D, scalers, reals, z[0], z[1], phase, targs,
                                 regularize=regularize)
            for state in list(opt_G.state.values()) + list(opt_D.state.values()):
                counter.host[state["step"]] = True  # Adam keeps its step counts on the host
    return counter


def roofline_ms(launches, nbytes, flops, tflops=ROOFLINE["tflops"]):
    """Each launch takes the longest of its memory time, its math time and the launch itself."""
    r = ROOFLINE
    memory_s, math_s = nbytes / (r["tb_s"] * 1e12), flops / (tflops * 1e12)
    return 1e3 * launches * max(memory_s / launches, math_s / launches, r["launch_us"] * 1e-6)


def summarize_count(counter, res, batch, top=10):
    """Totals and the `top` most expensive entries (one per op name) of a count."""
    entries = {}
    for name, launches, nbytes, flops, tflops in counter.rows:  # (one rate per name: fp32 math is named so)
        e = entries.setdefault(name, dict(name=name, launches=0, gb=0.0, gflop=0.0, tflops=tflops))
        e["launches"] += launches
        e["gb"] += nbytes / 1e9
        e["gflop"] += flops / 1e9
    rows = list(entries.values())
    for e in rows:
        e["ms"] = roofline_ms(e["launches"], e["gb"] * 1e9, e["gflop"] * 1e9, e.pop("tflops"))
    total = {k: sum(e[k] for e in rows) for k in ("launches", "gb", "gflop", "ms")}
    triton_ = sum(e["launches"] for e in rows if e["name"].startswith("triton "))
    return dict(res=res, batch=batch, launches=total["launches"], torch_launches=total["launches"] - triton_,
                triton_launches=triton_, gb=total["gb"], tflop=total["gflop"] / 1e3, roofline_ms=total["ms"],
                sec_per_kimg=total["ms"] / batch, host_syncs=len(counter.syncs),
                host_sync_ops=sorted(set(counter.syncs)), roofline=dict(ROOFLINE),
                top=sorted(rows, key=lambda e: -e["ms"])[:top])


def bench_count(args, cfg, res, batch):
    impl, amp, k, layout = args.count_impl, args.count_amp, args.r1_every, args.count_layout
    print(f"\ncount: one training iteration (train.train_step: D step with R1, G step, EMA) at {res}x{res}, "
          f"batch {batch}, amp {amp}, R1 pass {args.r1_precision}"
          + (f", R1 every {k} steps (the average iteration)" if k > 1 else "") + f", kernels {impl}, {layout}, "
          "on fake tensors")
    r = summarize_count(count_step(cfg, res, batch, impl, amp, k, args.r1_precision, layout), res, batch)
    roof = ROOFLINE
    print(f"  {r['launches']:,.0f} launches ({r['torch_launches']:,.0f} torch ops, {r['triton_launches']:,.0f} Triton), "
          f"{r['gb']:.2f} GB moved, {r['tflop']:.3f} TFLOP, {r['host_syncs']} host syncs "
          f"{r['host_sync_ops'] or ''}")
    print(f"  roofline {r['roofline_ms']:.2f} ms per step = {r['sec_per_kimg']:.2f} s/kimg (H100 SXM: "
          f"{roof['tb_s']:g} TB/s, {roof['tflops']:g} TFLOP/s dense bf16 ({roof['tflops_tf32']:g} TF32, "
          f"{roof['tflops_fp32']:g} fp32), {roof['launch_us']:g} us per launch)")
    print(f"  {'share':>6s} {'ms':>7s} {'launches':>8s} {'GB':>7s} {'GFLOP':>8s}  the {len(r['top'])} most "
          f"expensive entries")
    for e in r["top"]:
        print(f"  {100 * e['ms'] / r['roofline_ms']:5.1f}% {e['ms']:7.2f} {e['launches']:8.0f} {e['gb']:7.2f} "
              f"{e['gflop']:8.1f}  {e['name']}")
    return r


# ----------------------------------------------------------------------------------------------
# Profile of one step

def bench_profile(args, cfg, device, res):
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    targs = step_args(cfg, device, args.amp, args.memory_format)
    nets = make_nets(cfg, targs)
    batch = recipe_batch(8 if 8 in args.recipes else 1, res, args.smoke)
    bench_step(nets, targs, res, batch, steps=1, warmup=max(1, args.warmup), count_flops=False)  # warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = 2
    with profile(activities=activities) as prof:
        bench_step(nets, targs, res, batch, steps=steps, warmup=0, count_flops=False)
    events = prof.key_averages()
    if device.type == "cuda":
        # GPU time: every kernel (cuDNN, cuBLAS, Triton) once; ops own the kernels they launch directly
        # (Triton kernels launched from an autograd.Function forward belong to no aten op).
        kernels_ = [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
        ops = [e for e in events if e.device_type == DeviceType.CPU and e.self_device_time_total > 0]
        clock, attr = "GPU", "self_device_time_total"
        total = sum(e.self_device_time_total for e in kernels_)
    else:
        kernels_, ops = [], [e for e in events if e.self_cpu_time_total > 0]
        clock, attr = "CPU", "self_cpu_time_total"
        total = sum(e.self_cpu_time_total for e in ops)

    def top(evts):
        evts = sorted(evts, key=lambda e: -getattr(e, attr))[:15]
        return [dict(name=e.key, ms_per_step=getattr(e, attr) / 1e3 / steps,
                     share=100 * getattr(e, attr) / max(total, 1)) for e in evts]

    result = dict(res=res, batch=batch, clock=clock, ms_per_step=total / 1e3 / steps, ops=top(ops),
                  kernels=top(kernels_))
    print(f"\nprofile: one training step at {res}x{res}, batch {batch}: {result['ms_per_step']:.1f} ms of {clock} "
          f"time (torch.profiler over {steps} steps)")
    for title, rows in (("ops (self time)", result["ops"]), ("GPU kernels", result["kernels"])):
        if rows:
            print(f"  {title}:")
        for t in rows:
            print(f"  {t['share']:5.1f}%  {t['ms_per_step']:9.3f} ms  {t['name'][:100]}")
    return result


# ----------------------------------------------------------------------------------------------
# Side by side with rosinality's port (issue 11's CPU bar): their networks behind our call
# signatures, so that one step function (train.d_loss, train.g_loss, Adam) trains both.

def load_rosinality(path):
    """Their model.py as a module, read from where the user keeps it (never copied into this repo)."""
    spec = importlib.util.spec_from_file_location("rosinality_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TheirG(torch.nn.Module):
    """rosinality's StyledGenerator called as ours, G(z, res, alpha, mixing=p). Style mixing their
    way: two latents in a list, the crossover block drawn by their Generator."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z, res, alpha=1.0, mixing=0.0):
        latents = [z, torch.randn_like(z)] if torch.rand(()) < mixing else z
        return self.net(latents, step=int(math.log2(res)) - 2, alpha=alpha)


class TheirD(torch.nn.Module):
    """rosinality's Discriminator called as ours, D(img, alpha); cfg.resolution scales R1 in d_loss."""

    def __init__(self, net, resolution):
        super().__init__()
        self.net, self.cfg = net, argparse.Namespace(resolution=resolution)

    def forward(self, img, alpha=1.0):
        return self.net(img, step=int(math.log2(img.shape[2])) - 2, alpha=alpha)


def gan_step(G, D, opt_G, opt_D, reals, phase, targs):
    """train.train_step without the EMA: the D step (softplus loss, R1 every step), then the G step
    with D's weights frozen, each with its Adam step."""
    z = torch.randn(2, reals.shape[0], 512, device=reals.device)  # both ports: z_dim 512
    loss_D, _ = train.d_loss(G, D, reals, z[0], phase, targs)
    opt_D.zero_grad(set_to_none=True)
    loss_D.backward()
    opt_D.step()
    D.requires_grad_(False)
    loss_G = train.g_loss(G, D, z[1], phase, targs)
    opt_G.zero_grad(set_to_none=True)
    loss_G.backward()
    opt_G.step()
    D.requires_grad_(True)


def rosinality_nets(module, device, layout):
    """{"ours": (G, D), "theirs": (G, D)}: the official full-size 1024 networks of both ports, ours in
    layout (--memory-format), theirs as their code makes it."""
    torch.manual_seed(0)
    cfg = sg.StyleGANConfig()
    theirs = TheirG(module.StyledGenerator(cfg.z_dim)), TheirD(module.Discriminator(from_rgb_activate=True),
                                                               cfg.resolution)
    ours = sg.Generator(cfg), sg.Discriminator(cfg)
    return {"ours": tuple(train.on_device(net, device, layout) for net in ours),
            "theirs": tuple(net.to(device) for net in theirs)}


def bench_rosinality(args, device, meta):
    targs = step_args(sg.StyleGANConfig(), device, "off", args.memory_format)  # fp32: theirs has no mixed precision
    nets = rosinality_nets(load_rosinality(args.rosinality), device, args.memory_format)
    print(f"\nrosinality: one training iteration (D step with R1, G step, Adam; mixing {targs.mixing}, alpha 1, "
          f"fp32) of ours (kernels {args.impl}) and of rosinality's port ({args.rosinality}), interleaved, "
          f"median of {args.rosinality_steps}, on {meta['device']}, {meta['cores']} cores, {meta['threads']} "
          f"torch threads, {meta['date']}")
    print(f"{'res':>5s} {'batch':>5s} | {'ours s/it':>9s} {'img/s':>7s} | {'theirs s/it':>11s} {'img/s':>7s} | "
          f"{'ours/theirs':>11s}")
    rows, progress = [], Progress("rosinality", len(args.res_list))
    for res in args.res_list:
        batch = args.batch or train.BATCH[1][res]
        phase = train.Phase(res, 1.0, batch, train.LR.get(res, 0.001))
        reals = torch.rand(batch, 3, res, res, device=device) * 2 - 1
        inputs = {"ours": train.on_device(reals, device, args.memory_format), "theirs": reals}  # each port's layout
        opts = {k: (train.adam(G, phase.lr), train.adam(D, phase.lr)) for k, (G, D) in nets.items()}
        times = {k: [] for k in nets}
        for i in range(1 + args.rosinality_steps):  # the first, untimed, makes Adam's state
            for k, (G, D) in nets.items():
                t0 = time.perf_counter()
                gan_step(G, D, *opts[k], inputs[k], phase, targs)
                sync(device)
                if i > 0:
                    times[k].append(time.perf_counter() - t0)
        sec = {k: statistics.median(t) for k, t in times.items()}
        row = dict(res=res, batch=batch, ratio=sec["theirs"] / sec["ours"],
                   **{k: dict(sec_per_it=sec[k], img_s=batch / sec[k], times=times[k]) for k in nets})
        rows.append(row)
        print(f"{res:5d} {batch:5d} | {sec['ours']:9.3f} {row['ours']['img_s']:7.1f} | {sec['theirs']:11.3f} "
              f"{row['theirs']['img_s']:7.1f} | {row['ratio']:10.2f}x  {progress.step()}")
    return dict(source=ROSINALITY_URL, path=args.rosinality, impl=args.impl, mixing=targs.mixing, rows=rows)


# ----------------------------------------------------------------------------------------------

def device_meta(device, args):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), platform.processor()) if os.path.exists("/proc/cpuinfo") \
            else platform.processor()
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(device=name, device_type=device.type, date=datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), torch=torch.__version__, triton=triton_version, cuda=torch.version.cuda,
        cores=os.cpu_count(), threads=torch.get_num_threads(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        tf32_cudnn=torch.backends.cudnn.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark,
        smoke=args.smoke, amp=args.amp, impl=args.impl, memory_format=args.memory_format, argv=sys.argv[1:])


def pick_peak(args, device, matmul):
    if args.peak_tflops:
        return dict(tflops=args.peak_tflops, source="--peak-tflops")
    if device.type == "cuda" and args.amp in ("bf16", "fp16"):
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_TFLOPS:
            if key in name:
                return dict(tflops=tflops, source=f"{key} data sheet, dense {args.amp}")
    if matmul is None:
        raise SystemExit("MFU needs a peak: run the matmul part or give --peak-tflops")
    return dict(tflops=matmul["tflops"], source=f"measured {matmul['n']}^3 {matmul['dtype']} matmul")


def main(argv=None):
    args = get_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: no CUDA device here; use --device cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # the count stands for a GPU run on any machine: bf16 and the Triton kernels unless told otherwise
    args.count_amp, args.count_impl = args.amp or "bf16", args.impl or "auto"
    args.count_layout = "nchw" if args.memory_format == "auto" else args.memory_format  # a GPU's auto
    args.amp = args.amp or ("bf16" if device.type == "cuda" else "off")
    args.impl = args.impl or "auto"  # train.py's
    args.memory_format = train.auto_layout(device) if args.memory_format == "auto" else args.memory_format
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    cfg = sg.StyleGANConfig(**SMOKE_CFG) if args.smoke else sg.StyleGANConfig(resolution=max(args.train_res))
    result = dict(meta=device_meta(device, args))
    print(f"bench: {result['meta']['device']} ({device}), torch {torch.__version__}, {result['meta']['date']}"
          f"{', SMOKE sizes' if args.smoke else ''}")

    def done(part, value):  # the JSON is rewritten after every part: a run cut short keeps its tables
        result[part] = value
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        return value

    impl, kernels.IMPL = kernels.IMPL, args.impl  # the training step's kernels; restored at the end
    interpret = kernels.INTERPRET
    try:
        if "count" in args.parts:
            res = args.res or (16 if args.smoke else 1024)
            count_cfg = sg.StyleGANConfig(**SMOKE_CFG) if args.smoke else sg.StyleGANConfig(resolution=res)
            try:
                sg.check_res(res, count_cfg)
            except ValueError as e:
                raise SystemExit(f"--res: {e}") from None
            batch = args.batch or (8 if args.smoke else train.BATCH[1][res])
            done("count", bench_count(args, count_cfg, res, batch))
        if "copy" in args.parts or "kernels" in args.parts:
            done("copy", bench_copy(device, args.copy_mb, args.rep_ms))
        if "matmul" in args.parts or "train" in args.parts:
            mm_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": torch.float32}[args.amp]
            done("matmul", bench_matmul(device, mm_dtype, 256 if args.smoke else 8192 if device.type == "cuda"
                                        else 2048, args.rep_ms))
        if "kernels" in args.parts:
            done("kernels", bench_kernels(args, cfg, device, dtype, result["copy"]["gb_s"]))
        # From here on the training step runs as train.py runs it on this machine: on a CPU the PyTorch
        # path, not the Triton interpreter the kernel table needs (unless --impl triton asks for it).
        kernels.INTERPRET = interpret and (device.type != "cpu" or args.impl == "triton")
        if device.type == "cpu":
            train.keep_freed_memory()  # as train.py's CPU processes (both ports, in the rosinality part)
        if "graphs" in args.parts:
            done("graphs", bench_graphs(args, cfg, device))
        rates = {}
        if "loader" in args.parts:
            rates = bench_loader(args, args.train_res, lambda r: recipe_batch(1, r, args.smoke))
            done("loader", [dict(res=r, batch=recipe_batch(1, r, args.smoke), img_s=v) for r, v in rates.items()])
        if "train" in args.parts:
            peak = done("peak", pick_peak(args, device, result.get("matmul")))
            done("train", bench_train(args, cfg, device, peak, rates))
            if args.gpus > 1:
                if 8 not in args.recipes:
                    raise SystemExit("--gpus: the scaling part compares recipe 8 runs; keep 8 in --recipes")
                done("scaling", bench_scaling(args, cfg, device, result["train"]))
            if "projection" in args.parts:
                done("projection", project(result["train"], cfg.resolution, result.get("scaling")))
        if "profile" in args.parts:
            res = args.profile_res or max(args.train_res)
            try:
                sg.check_res(res, cfg)
            except ValueError as e:
                raise SystemExit(f"--profile-res: {e}") from None
            done("profile", bench_profile(args, cfg, device, res))
        if "rosinality" in args.parts:
            done("rosinality", bench_rosinality(args, device, result["meta"]))
    finally:
        kernels.IMPL, kernels.INTERPRET = impl, interpret
    if args.json:
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
