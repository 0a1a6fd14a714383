"""Tests for train.py: the official schedule at its boundaries, a tiny end-to-end run, exact resume,
two-process data parallelism (gloo), the non-finite guard, SIGINT, and input errors."""
import copy
import errno
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

import kernels
import stylegan as sg
import train
from conftest import ReplayedOnCPU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--data", "builtin", "--res", "8", "--start-res", "4", "--phase-kimg", "0.016",
        "--fmap-base", "64", "--fmap-max", "16", "--w-dim", "16", "--batch", "8",
        "--tick-kimg", "0.032", "--amp", "off", "--impl", "ref"]


def run(tmp_path, *extra, name="runs"):
    return train.main(TINY + ["--out", str(tmp_path / name), *extra])


def load(run_dir):
    return torch.load(os.path.join(run_dir, "ckpt.pt"), map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------
# Schedule

@pytest.mark.parametrize("nimg, res, alpha", [
    (0, 8, 1.0), (599_999, 8, 1.0),              # 600k stable at 8x8
    (600_000, 16, 0.0), (900_000, 16, 0.5),      # then 16x16 fades in over 600k
    (1_200_000, 16, 1.0), (1_799_999, 16, 1.0),  # and trains 600k
    (1_800_000, 32, 0.0), (7_800_000, 1024, 0.0),
    (8_100_000, 1024, 0.5), (8_400_000, 1024, 1.0), (25_000_000, 1024, 1.0)])
def test_schedule_official_ffhq(nimg, res, alpha):
    phase = train.schedule(nimg, 1024)
    assert (phase.res, phase.alpha) == (res, pytest.approx(alpha))


def test_schedule_batch_and_lr_tables():
    s = train.schedule
    assert (s(0, 1024).batch, s(0, 1024).lr) == (128, 0.001)
    assert s(599_999, 1024, num_gpus=8).batch == 256                  # 8x8 on 8 GPUs
    fade128 = s(4_200_000, 1024)                                       # 128 fading in
    assert (fade128.res, fade128.alpha, fade128.batch, fade128.lr) == (128, 0.0, 16, 0.0015)
    assert s(8_400_000, 1024).batch == 4 and s(8_400_000, 1024, num_gpus=8).batch == 32
    assert [s(0, r, r).lr for r in (64, 128, 256, 512, 1024)] == [0.001, 0.0015, 0.002, 0.003, 0.003]
    assert s(0, 64, 4).res == 4 and s(0, 1024, batch=7, lr=0.01).batch == 7
    assert s(123, 256, phase_kimg=0).res == 256  # no growing: straight to the final resolution


def test_more_than_8_processes_keep_4_images_each():
    """The 8-GPU table gives 32 at 64x64 and up: 2 per process with 16 processes, which would halve
    the minibatch stddev group. The total is raised to 4 per process instead; an explicit --batch
    that leaves fewer is refused before the run starts."""
    s = train.schedule
    assert [s(8_400_000, 1024, num_gpus=n).batch for n in (1, 2, 4, 8, 16, 32)] == [4, 8, 16, 32, 64, 128]
    assert s(0, 8, num_gpus=16).batch == 256 and s(0, 64, 64, num_gpus=16).batch == 64
    args = train.get_args(["--data", "builtin", "--res", "8", "--batch", "8", "--gpus", "4"])
    with pytest.raises(SystemExit, match="2 image.s. to each of 4 processes"):
        train.prepare(args)


def test_wgan_gp_caps_the_learning_rate_as_the_official_progan_run():
    def lr(*flags):  # at 0 images with --start-res R: R's learning rate
        return [train.phase_at(0, train.get_args(["--cfg", "paper", "--start-res", str(r), *flags]), 1, r).lr
                for r in (64, 128, 256, 512, 1024)]
    assert lr("--loss", "wgan-gp") == [0.001, 0.0015, 0.002, 0.002, 0.002]
    assert lr() == [0.001, 0.0015, 0.002, 0.003, 0.003]  # R1: the StyleGAN table


def test_r1_is_taken_at_full_resolution_as_official():
    """The official D reads reals upsampled to the final resolution, so R1 at res r is the native
    penalty times (r / final)^2; at the final resolution they are the same."""
    torch.manual_seed(0)
    cfg = sg.StyleGANConfig(resolution=16, fmap_base=64, fmap_max=16, z_dim=16, w_dim=16, mapping_fmaps=16)
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    args = train.get_args(["--mixing", "0"])
    args.device, args.amp = torch.device("cpu"), "off"
    for res in (8, 16):
        reals = torch.randn(4, 3, res, res, requires_grad=True)
        grad, = torch.autograd.grad(D(reals).sum(), reals)
        native = grad.square().sum(dim=(1, 2, 3)).mean()
        _, penalty = train.d_loss(G, D, reals.detach(), torch.randn(4, 16), train.Phase(res, 1.0, 4, 0.001), args)
        torch.testing.assert_close(penalty, native * (res / 16) ** 2, rtol=1e-5, atol=1e-9)


def test_fade_reals():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(train.fade_reals(x, 1.0), x)
    low = torch.nn.functional.avg_pool2d(x, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(train.fade_reals(x, 0.0), low)


# ----------------------------------------------------------------------------------------------
# Runs

def test_tiny_run_writes_checkpoint_samples_and_log(tmp_path):
    run_dir = run(tmp_path, "--kimg", "0.064")
    log = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]
    assert len(log) >= 2 and log[-1]["kimg"] == 0.064 and log[-1]["res"] == 8
    for row in log:
        assert all(math.isfinite(row[k]) for k in ("loss_G", "loss_D", "penalty", "sec_per_kimg"))
    assert any(f.startswith("fakes") and f.endswith(".png") for f in os.listdir(run_dir))
    G, info = sg.load_generator(os.path.join(run_dir, "ckpt.pt"))
    assert info["res"] == 8 and info["cur_nimg"] == 64
    assert G(torch.randn(2, 16), res=info["res"]).shape == (2, 3, 8, 8)
    assert "done at 0.1 kimg" in open(os.path.join(run_dir, "log.txt")).read()


def test_loader_workers(tmp_path, monkeypatch):
    """On a CPU the trainer loads its data itself (--workers 0): a worker would take turns with the
    step's threads, which use every core. --workers sets it."""
    seen, make = [], train.data.make_loader
    monkeypatch.setattr(train.data, "make_loader", lambda *a, **k: seen.append(k["num_workers"]) or make(*a, **k))
    run(tmp_path, "--kimg", "0.016")
    run(tmp_path, "--kimg", "0.016", "--workers", "1")
    assert seen == [0, 1]


KEPT = """
import ctypes, sys, torch, train
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
try:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
except (OSError, AttributeError):
    sys.exit(3)
if sys.argv[1] == "kept":
    train.keep_freed_memory()
mapped = libc.mallinfo2().hblkhd
x = torch.empty(4 << 20, dtype=torch.uint8)
print(libc.mallinfo2().hblkhd - mapped)
"""


def test_cpu_training_keeps_freed_memory():
    """After keep_freed_memory (a CPU run's setup) a tensor of a few MB comes from the heap; in a fresh
    process glibc's adaptive default (128 KiB at first) maps it anew, pages the kernel zeroes, as it
    would map each step's tensors again after they were freed and trimmed."""
    grew = {}
    for how in ("kept", "default"):
        proc = subprocess.run([sys.executable, "-c", KEPT, how], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode == 3:
            pytest.skip("not glibc >= 2.33")
        assert proc.returncode == 0, proc.stderr
        grew[how] = int(proc.stdout.split()[-1])
    assert grew == {"kept": 0, "default": pytest.approx(4 << 20, rel=0.01)}


def test_metrics_during_training(tmp_path):
    run_dir = run(tmp_path, "--kimg", "0.064", "--metrics", "swd", "--metrics-kimg", "0.064",
                  "--metrics-num", "64")
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]
    evals = [r for r in rows if "metrics" in r]
    assert len(evals) == 1 and evals[0]["res"] == 8 and evals[0]["kimg"] == 0.064
    assert math.isfinite(evals[0]["metrics"]["swd"]) and evals[0]["metrics"]["swd"] > 0


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_run(tmp_path, amp):
    run_dir = run(tmp_path, "--kimg", "0.032", "--amp", amp)
    ckpt = load(run_dir)
    assert ckpt["args"]["amp"] == amp and all(torch.isfinite(v).all() for v in ckpt["G"].values())
    for row in map(json.loads, open(os.path.join(run_dir, "log.jsonl"))):
        assert math.isfinite(row["loss_G"]) and math.isfinite(row["loss_D"])


def test_resume_is_exact(tmp_path):
    """12 steps straight == 6 steps, stop, resume, 6 more: through two phase changes (Adam resets,
    a new loader resolution) and style mixing, noise and mirroring."""
    straight = load(run(tmp_path, "--kimg", "0.096", name="a"))
    first = run(tmp_path, "--kimg", "0.048", name="b")
    assert load(first)["cur_nimg"] == 48
    resumed = train.main(["--out", str(tmp_path / "b"), "--resume", "auto", "--kimg", "0.096"])
    assert resumed == first
    resumed = load(resumed)
    assert resumed["cur_nimg"] == straight["cur_nimg"] == 96
    for key in ("G", "D", "G_ema"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), f"{key}.{name}"
    for a, b in zip(straight["opt_G"]["state"].values(), resumed["opt_G"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_two_processes_match_one(tmp_path):
    """gloo on CPU: the ranks end identical (checked inside train.py at every checkpoint) and equal
    a one-process run with the same global batch. Per-sample randomness that cannot be split
    (noise maps, mixing, flips, minibatch-stddev groups) is switched off to compare exactly."""
    # Two steps: without noise inputs the 4x4 planes start constant, and instance norm multiplies
    # their rounding noise by 1/sqrt(eps) = 1e4; over more steps Adam turns that into chaos.
    same = ["--kimg", "0.016", "--no-noise", "--mixing", "0", "--no-mirror", "--mbstd-group", "1",
            "--tick-kimg", "0.008"]  # a log row per step
    two = run(tmp_path, "--gpus", "2", *same, name="two")
    one = run(tmp_path, *same, name="one")
    assert "weights identical on all 2 processes" in open(os.path.join(two, "log.txt")).read()
    a, b = load(two), load(one)
    assert a["cur_nimg"] == b["cur_nimg"] == 16
    torch.testing.assert_close(a["G"]["w_avg"], b["G"]["w_avg"], rtol=1e-5, atol=1e-7)
    rows = [[json.loads(x) for x in open(os.path.join(d, "log.jsonl"))] for d in (two, one)]
    # Step 1 sees the same data and latents: equal losses. Step 2 also saw one averaged update.
    assert len(rows[0]) == len(rows[1]) == 2
    for (ra, rb), rel in zip(zip(*rows), (1e-5, 1e-4)):
        assert ra["loss_D"] == pytest.approx(rb["loss_D"], rel=rel)
        assert ra["loss_G"] == pytest.approx(rb["loss_G"], rel=rel)
    # Adam moves every weight by about lr * grad / |grad| per step, whatever the gradient's size, so
    # rounding differences in gradients that are pure rounding noise (e.g. the 4x4 bias before the
    # instance norm of a constant plane) become weight differences of up to a few steps. Require all
    # but 1% of the weights to agree to 10% of one step (lr = 0.001): a wrong shard or an
    # un-averaged gradient moves most weights differently.
    for net in ("G", "D"):
        diff = torch.cat([(a[net][k] - b[net][k]).abs().flatten() for k in a[net]])
        assert (diff > 1e-4).float().mean() < 0.01, net
        assert diff.max() < 0.01, net


def test_non_finite_loss_stops_without_overwriting(tmp_path, monkeypatch, capsys):
    real_g_loss, calls = train.g_loss, []

    def poisoned(*a, **k):
        calls.append(1)
        loss = real_g_loss(*a, **k)
        return loss * float("nan") if len(calls) > 6 else loss
    monkeypatch.setattr(train, "g_loss", poisoned)
    with pytest.raises(SystemExit):
        run(tmp_path, "--kimg", "0.128", "--snap-kimg", "0.032")
    out = capsys.readouterr().out
    assert "non-finite loss" in out and "at 0.1 kimg" in out
    assert "Last good checkpoint" in out and "(0.0 kimg)" in out
    run_dir = os.path.join(tmp_path, "runs", os.listdir(tmp_path / "runs")[0])
    good = load(run_dir)
    assert good["cur_nimg"] == 32  # written after step 4; nothing later replaced it
    assert all(torch.isfinite(v).all() for v in good["G"].values())


@pytest.mark.parametrize("sig, gpus, group, workers", [(signal.SIGINT, 1, True, 1), (signal.SIGTERM, 1, True, 0),
                                                       (signal.SIGTERM, 2, False, 0), (signal.SIGINT, 2, True, 1)])
def test_signal_writes_checkpoint(tmp_path, sig, gpus, group, workers):
    """Ctrl-C and job schedulers signal the whole process group, loader workers included (a GPU run's
    default; --workers 1 here); `kill PID` only the parent."""
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *TINY, "--kimg", "50", "--out", str(tmp_path),
           "--gpus", str(gpus), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("kimg"):
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
            break
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + sig, out  # the shell's convention, once the checkpoint is written
    assert signal.Signals(sig).name in out and "stopped at" in out and f"exit status {128 + sig}" in out
    assert "Traceback" not in out
    run_dir = os.path.join(tmp_path, os.listdir(tmp_path)[0])
    assert load(run_dir)["cur_nimg"] >= 32


# ----------------------------------------------------------------------------------------------
# Faults: every error ends the run within seconds, in one line naming the last good checkpoint

def train_process(out, *extra, limit=None, prefix=()):
    """train.py in a subprocess, --kimg 1 unless extra says otherwise -> (status, output, seconds).
    limit: a file size limit (RLIMIT_FSIZE) in bytes; writes beyond it fail like a full disk."""
    def fsize():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    cmd = [*prefix, sys.executable, os.path.join(ROOT, "train.py"), *TINY, "--kimg", "1", "--out", str(out), *extra]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          preexec_fn=fsize if limit else None)
    return proc.returncode, proc.stdout + proc.stderr, time.time() - t0


def stopping_lines(out):
    return [x for x in out.splitlines() if "stopping at" in x]


def leftovers(folder):
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.endswith(".tmp")]


@pytest.mark.parametrize("gpus, workers", [(1, 0), (1, 1), (2, 1)])
def test_bad_image_mid_folder_ends_the_run(tmp_path, gpus, workers):
    """Image 14 is the 21st read (seed 0's order), after the checkpoint at the first new resolution
    (16 images): the loader (in the trainer's process, or its worker) raises, and the run must end,
    not hang (with a worker it did, forever). With two processes it is process 1's shard; process 0
    and the parent must end too."""
    from PIL import Image
    for i in range(24):
        Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy()).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "14.png").write_bytes(b"not a png")
    status, out, seconds = train_process(tmp_path / "runs", "--data", str(tmp_path), "--gpus", str(gpus),
                                         "--workers", str(workers))
    run_dir = os.path.join(tmp_path, "runs", os.listdir(tmp_path / "runs")[0])
    assert status == 1 and seconds < 30, out
    assert "Traceback" not in out, out
    bad = [x for x in stopping_lines(out) if "14.png" in x]
    assert len(bad) == 1 and "cannot decode image" in bad[0] and "--skip-bad" in bad[0], out
    ckpt = os.path.join(run_dir, "ckpt.pt")
    assert f"Last good checkpoint: {ckpt}" in bad[0] and load(run_dir)["cur_nimg"] == 16
    if gpus == 2:
        summary, = [x for x in out.splitlines() if x.startswith("train.py: ")]
        assert "process 1 exited with status 1" in summary and f"Last good checkpoint: {ckpt} (0.0 kimg)" in summary
    assert not leftovers(tmp_path)


def _fail_at_once():
    raise SystemExit(1)


def _blocked_in_a_collective():  # as an NCCL wait: no Python signal handler ever runs
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)


def test_a_process_that_does_not_end_after_another_failed_is_killed(monkeypatch):
    monkeypatch.setattr(train, "GRACE_SEC", 0.5)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=f) for f in (_blocked_in_a_collective, _fail_at_once)]
    for p in procs:
        p.start()
    t0 = time.time()
    killed = train.join_ranks(procs)
    assert killed == [0] and time.time() - t0 < 5, [p.exitcode for p in procs]
    assert [p.exitcode for p in procs] == [-signal.SIGKILL, 1]


@pytest.mark.parametrize("disk", ["file-size-limit", "small-tmpfs"])
def test_full_disk_ends_the_run_and_keeps_the_last_checkpoint(tmp_path, disk):
    """The first checkpoint of a resumed run does not fit: the run ends within seconds in one line
    with the space needed, the previous checkpoint stays as it was, no partial .tmp file remains."""
    run_dir = run(tmp_path, "--kimg", "0.016")
    before = open(os.path.join(run_dir, "ckpt.pt"), "rb").read()
    resume = ["--resume", "auto", "--kimg", "1", "--snap-kimg", "0.032"]
    if disk == "file-size-limit":
        status, out, seconds = train_process(tmp_path / "runs", *resume, limit=len(before) // 2)
        why = "File too large"
    else:
        # The run folder on a tmpfs with 128 KiB to spare: room for logs and samples, not for the
        # new checkpoint. The mount exists only in a private namespace, so the script checks there.
        if not shutil.which("unshare"):
            pytest.skip("no unshare here to mount a small file system")
        stage = tmp_path / "stage"
        shutil.copytree(run_dir, stage)
        size = sum(-(-os.path.getsize(stage / f) // 4096) * 4096 for f in os.listdir(stage)) + 128 * 1024
        script = tmp_path / "full-disk.sh"
        script.write_text(f'mount -t tmpfs -o size={size} tmpfs {run_dir} || exit 99\n'
                          f'cp -r {stage}/. {run_dir}\n"$@"\ns=$?\nls -a {run_dir}\n'
                          f'cmp {run_dir}/ckpt.pt {stage}/ckpt.pt && echo unchanged\nexit $s\n')
        status, out, seconds = train_process(tmp_path / "runs", *resume, prefix=["unshare", "-rm", "sh", script])
        if status == 99:
            pytest.skip("no unprivileged mount namespaces here")
        why = "No space left on device"
    assert status == 1 and seconds < 30, out
    line, = stopping_lines(out)
    assert re.search(f"cannot write {run_dir}/ckpt.pt: {why}; it needs about [0-9.]+ MB free in {run_dir} "
                     f"\\([0-9.]+ MB free now\\)", line), out
    assert f"Last good checkpoint: {run_dir}/ckpt.pt (0.0 kimg)" in line and "Traceback" not in out
    if disk == "file-size-limit":
        assert open(os.path.join(run_dir, "ckpt.pt"), "rb").read() == before and not leftovers(tmp_path)
    else:
        assert "unchanged" in out and ".tmp" not in out, out


def test_failed_save_removes_its_partial_file(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    train.save_checkpoint(path, {"w": torch.ones(3)})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"ckpt.pt: No space left on device; it needs about 4\.0 MB free") as e:
        train.save_checkpoint(path, {"w": torch.zeros(2 ** 20)})
    assert "\n" not in str(e.value) and os.listdir(tmp_path) == ["ckpt.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))


def test_partial_files_of_a_killed_run_are_removed_on_resume(tmp_path, capsys):
    run_dir = run(tmp_path, "--kimg", "0.016")
    for name in ("ckpt.pt.tmp", "snapshot-000000.016.pt.tmp"):  # what a kill -9 mid-save leaves
        open(os.path.join(run_dir, name), "wb").write(b"partial")
    train.main(["--out", str(tmp_path / "runs"), "--resume", "auto", "--kimg", "0.024"])
    assert not leftovers(tmp_path) and load(run_dir)["cur_nimg"] == 24
    assert "removed 2 partial file(s) of saves cut short: ckpt.pt.tmp, snapshot-000000.016.pt.tmp" \
        in capsys.readouterr().out


def test_snapshots_and_grids_below_one_kimg_keep_their_own_files(tmp_path):
    """A tick and a snapshot every 8 images: four of each, none replacing another (named by whole
    kimg, all four were 000000)."""
    run_dir = run(tmp_path, "--kimg", "0.032", "--tick-kimg", "0.008", "--snap-kimg", "0.008")
    files = sorted(os.listdir(run_dir))
    steps = ["000000.008", "000000.016", "000000.024", "000000.032"]
    assert [f for f in files if f.startswith("fakes")] == [f"fakes{s}.png" for s in steps]
    assert [f for f in files if f.startswith("snapshot-")] == [f"snapshot-{s}.pt" for s in steps]
    for s in steps:
        snap = torch.load(os.path.join(run_dir, f"snapshot-{s}.pt"), weights_only=True)
        assert snap["cur_nimg"] == int(s[-3:])
    assert train.kimg_name(25_000_128) == "025000.128"


def _claim_run_dirs(out, barrier, n, queue):
    args = train.get_args(["--out", out])
    args.data_name, args.final_res = "builtin", 8
    barrier.wait()
    queue.put([train.new_run_dir(args) for _ in range(n)])


def test_two_runs_started_together_get_two_folders(tmp_path):
    """Two processes claim 30 run folders each at the same moment: 60 folders, none shared (the
    number came from listdir and the folder was made later, so both could take the same one)."""
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claim_run_dirs, args=(str(tmp_path), barrier, 30, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    claimed = queue.get(timeout=60) + queue.get(timeout=60)
    for p in procs:
        p.join()
    assert len(set(claimed)) == 60 and all(os.path.isdir(d) for d in claimed)
    assert sorted(os.listdir(tmp_path)) == [f"{i:05d}-builtin-8" for i in range(60)]


# ----------------------------------------------------------------------------------------------
# Bad input: clear messages before anything starts

def test_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="--data"):
        train.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="power of two"):
        train.main(["--data", "builtin", "--res", "12", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="does not split over 3 processes"):
        train.main(["--data", "builtin", "--res", "8", "--batch", "8", "--gpus", "3", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--metrics-num 1 is below the 2 processes"):
        train.main(["--data", "builtin", "--res", "8", "--gpus", "2", "--metrics", "swd",
                    "--metrics-kimg", "1", "--metrics-num", "1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no checkpoint"):
        train.main(["--resume", str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="junk.pt is not a readable checkpoint"):
        train.main(["--resume", str(tmp_path / "junk.pt"), "--out", str(tmp_path)])
    os.remove(tmp_path / "junk.pt")
    assert not os.listdir(tmp_path)  # nothing was started


def usage_error(capsys, call):
    """call() must end as argparse's parser.error does: exit status 2 and one error line."""
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if ": error: " in x]
    assert e.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("flags, says", [
    (["--kimg", "0"], "--kimg 0: must be a finite number > 0"), (["--kimg", "-5"], "--kimg -5: must be"),
    (["--kimg", "nan"], "--kimg nan: must be"), (["--batch", "0"], "--batch 0: must be an integer >= 1"),
    (["--batch", "-4"], "--batch -4: must be an integer >= 1"), (["--gpus", "0"], "--gpus 0: must be"),
    (["--lr", "-0.002"], "--lr -0.002: must be a finite number > 0"),
    (["--mixing", "1.5"], "--mixing 1.5: a probability, must be between 0 and 1"),
    (["--mixing", "-1"], "--mixing -1: a probability"), (["--seed", "-1"], "--seed -1: must be an integer >= 0"),
    (["--workers", "-1"], "--workers -1: must be an integer >= 0")])
def test_nonsense_flags_are_refused(tmp_path, capsys, flags, says):
    """Each trained a step and wrote a checkpoint, became the default (--batch 0), or crashed."""
    # (--kimg 0.008 first: should a flag slip through again, the run is one step, not the paper's 25000 kimg)
    argv = TINY + ["--kimg", "0.008", "--out", str(tmp_path / "runs"), *flags]
    assert says in usage_error(capsys, lambda: train.main(argv))
    assert not os.path.exists(tmp_path / "runs")


def test_resume_refuses_flags_for_another_network(tmp_path, capsys):
    """A resumed run keeps the checkpoint's network; a flag asking for another one was ignored."""
    run_dir = run(tmp_path, "--kimg", "0.016")
    resume = ["--out", str(tmp_path / "runs"), "--resume", "auto"]
    ckpt = os.path.join(run_dir, "ckpt.pt")
    for flags, says in ((["--res", "16"], f"--res 16: the network in {ckpt} has resolution 8"),
                        (["--fmap-base", "128"], "--fmap-base 128: the network in"),
                        (["--no-noise"], "--no-noise: the network in"),
                        (["--kimg", "0.016"], f"--kimg 0.016: {ckpt} has reached 0.016 kimg already")):
        assert says in usage_error(capsys, lambda: train.main(resume + flags)), flags
    train.main(resume + ["--res", "8", "--fmap-base", "64", "--kimg", "0.024"])  # the same values are fine
    assert load(run_dir)["cur_nimg"] == 24


def test_resume_auto_without_a_checkpoint_says_it_starts_a_new_run(tmp_path, capsys):
    run_dir = run(tmp_path, "--kimg", "0.008", "--resume", "auto")
    assert f"--resume auto: no checkpoint in {tmp_path / 'runs'}; starting a new run" in capsys.readouterr().out
    assert load(run_dir)["cur_nimg"] == 8


def test_out_that_cannot_hold_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    line = usage_error(capsys, lambda: train.main(TINY + ["--out", str(tmp_path / "file")]))
    assert f"--out {tmp_path / 'file'} is a file; give a folder" in line
    read_only = tmp_path / "ro"  # a read-only tmpfs there, in a private mount namespace
    read_only.mkdir()
    script = tmp_path / "read-only.sh"
    script.write_text(f'mount -t tmpfs -o ro,size=64k tmpfs {read_only} || exit 99\n"$@"\n')
    if not shutil.which("unshare"):
        pytest.skip("no unshare here to mount a read-only file system")
    status, out, _ = train_process(read_only / "runs", prefix=["unshare", "-rm", "sh", script])
    if status == 99:
        pytest.skip("no unprivileged mount namespaces here")
    errors = [x for x in out.splitlines() if ": error: " in x]
    assert status == 2 and "Traceback" not in out and len(errors) == 1, out
    assert f"--out {read_only}/runs: cannot create a run folder there (Read-only file system)" in errors[0]


@pytest.mark.parametrize("edit, says", [("fmap_max", "weights do not match its config (12 of another shape, e.g."),
                                        ("colour", "its config has unknown key(s) colour")])
def test_checkpoint_whose_config_does_not_match_its_weights(tmp_path, edit, says):
    """train.py --resume, sample.py and metrics.py: one line each, where load_state_dict raised
    'Error(s) in loading state_dict' over many lines (or the config a TypeError)."""
    import metrics
    import sample
    ckpt = load(run(tmp_path, "--kimg", "0.016"))
    ckpt["config"][edit] = 32 if edit == "fmap_max" else "blue"
    path = str(tmp_path / "edited.pt")
    torch.save(ckpt, path)
    for call in (lambda: train.main(["--resume", path, "--out", str(tmp_path / "runs"), "--kimg", "1"]),
                 lambda: sample.main(["--ckpt", path, "--out", str(tmp_path / "s.png")]),
                 lambda: sample.main(["--ckpt", path, "--export-official", str(tmp_path / "x.pkl")]),
                 lambda: metrics.main(["--ckpt", path, "--data", "builtin", "--metrics", "swd", "--quiet"])):
        with pytest.raises(SystemExit) as e:
            call()
        assert says in str(e.value) and path in str(e.value) and "\n" not in str(e.value)


def test_missing_fid_weights_fail_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEGAN_INCEPTION", str(tmp_path / "no-such-weights.pth"))
    with pytest.raises(SystemExit, match="--metrics fid: .*no-such-weights"):
        run(tmp_path, "--metrics-kimg", "1")
    assert not os.path.exists(tmp_path / "runs")


def test_eta_uses_measured_speed_per_resolution():
    args = train.get_args(["--phase-kimg", "1"])
    # 8x8 for 1k stable, 16x16 fades in over 1k then trains 1k: at 1k images, 2k of 16x16 remain
    eta = train.estimate_eta(1000, 3000, {8: 1.0, 16: 5.0}, 16, 16, args, 1)
    assert eta == pytest.approx(10.0)
    eta = train.estimate_eta(1000, 3000, {8: 1.0}, 8, 16, args, 1)  # 16x16 not measured yet
    assert eta == pytest.approx(2 * 2 ** 0.5)


# ----------------------------------------------------------------------------------------------
# Presets and progress

def test_presets():
    quick, paper = train.CFGS["quick"], train.get_args(["--data", "mine"])
    assert paper.cfg == "paper" and (paper.kimg, paper.phase_kimg, paper.lr, paper.batch) == (25000, 600, None, None)
    for argv in ([], ["--data", "mine", "--cfg", "quick"]):  # the default, and any dataset on request
        args = train.get_args(argv)
        assert args.cfg == "quick"
        assert all(getattr(args, k) == v for k, v in quick.items() if k != "res")
    assert train.get_args(["--res", "64"]).cfg == "paper"
    assert train.get_args(["--cfg", "quick", "--kimg", "5"]).kimg == 5  # an explicit flag wins
    assert (paper.mixing, train.get_args([]).mixing, train.get_args(["--mixing", "0.9"]).mixing) == (0.9, 0.0, 0.9)


def test_lr_rampdown_falls_along_a_half_cosine(tmp_path):
    """--lr-rampdown F: the schedule's learning rate until the last F of the run, then a half cosine
    to 0; none in the official recipe (--cfg paper). A run logs the ramped rate at every tick."""
    args = train.get_args(["--kimg", "10", "--lr-rampdown", "0.4"])
    ramp = [train.lr_ramp(k * 1000, args) for k in (0, 6, 8, 10)]
    assert ramp[:2] == [1.0, 1.0] and ramp[2] == pytest.approx(0.5) and ramp[3] == pytest.approx(0.0, abs=1e-12)
    assert train.lr_ramp(9000, train.get_args(["--data", "mine", "--kimg", "10"])) == 1.0  # --cfg paper: none
    assert train.get_args([]).lr_rampdown == 0.4  # the quick preset's
    run_dir = run(tmp_path, "--kimg", "0.128", "--lr-rampdown", "0.5", "--tick-kimg", "0.016", "--lr", "0.002")
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl")) if '"lr"' in line]
    run_args = train.get_args(TINY + ["--kimg", "0.128", "--lr-rampdown", "0.5"])
    for row in rows:  # each tick logs the rate of its last step, taken at kimg - batch
        nimg = row["kimg"] * 1000 - 8
        assert row["lr"] == pytest.approx(0.002 * train.lr_ramp(nimg, run_args))
    assert rows[0]["lr"] == 0.002 and 0 < rows[-1]["lr"] < 0.0002
    with pytest.raises(SystemExit):
        train.get_args(["--lr-rampdown", "1.5"])


def test_quick_preset_on_a_folder(tmp_path):
    """`--data FOLDER --cfg quick` trains the quick network at 32x32 (or the data's own resolution
    when that is lower) on the user's images."""
    from PIL import Image
    for i in range(4):
        Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy()).save(tmp_path / f"{i}.png")
    run_dir = train.main(["--data", str(tmp_path), "--cfg", "quick", "--kimg", "0.032", "--batch", "8",
                          "--metrics-kimg", "0", "--impl", "ref", "--out", str(tmp_path / "runs")])  # not interpreted
    ckpt = load(run_dir)
    assert ckpt["config"]["resolution"] == 16 and ckpt["config"]["fmap_max"] == train.CFGS["quick"]["fmap_max"]
    assert ckpt["args"]["cfg"] == "quick"


def test_progress_between_ticks(tmp_path, monkeypatch):
    """A progress line (kimg done / total, img/s, ETA) at least every PROGRESS_SEC, whatever the
    tick size; plain lines in a file, no carriage returns."""
    monkeypatch.setattr(train, "PROGRESS_SEC", 0.0)  # due at every step between ticks, on any machine
    run_dir = run(tmp_path, "--kimg", "0.256", "--tick-kimg", "1000")
    log = open(os.path.join(run_dir, "log.txt")).read()
    lines = [x for x in log.splitlines() if " / 0.256 |" in x]
    assert len(lines) >= 2 and all("img/s | ETA" in x for x in lines), log
    assert "\r" not in log


def test_long_run_is_announced(capsys):
    line, logged = [0, 0.0, False], []
    args = train.get_args(["--data", "mine"])
    train.note_long_run(line, 3 * 86400, args, torch.device("cpu"), logged.append)
    train.note_long_run(line, 3 * 86400, args, torch.device("cpu"), logged.append)
    assert len(logged) == 1 and "3d 0h" in logged[0] and "--cfg quick" in logged[0]
    train.note_long_run([0, 0.0, False], 3600, args, torch.device("cpu"), logged.append)
    assert len(logged) == 1  # an hour is not worth a warning


@pytest.mark.parametrize("name", ["table1-b", "table1-c", "table4-stylebased-1"])
def test_paper_config_trains(tmp_path, name):
    """--config NAME builds the paper's generator (recorded in the checkpoint) with its mixing."""
    run_dir = run(tmp_path, "--kimg", "0.016", "--config", name)
    ckpt = load(run_dir)
    for k, v in sg.PAPER_CONFIGS[name]["cfg"].items():
        assert ckpt["config"][k] == v, k
    assert ckpt["args"]["mixing"] == sg.PAPER_CONFIGS[name]["mixing"]
    G, _ = sg.load_generator(os.path.join(run_dir, "ckpt.pt"))
    assert G(torch.randn(2, 16), res=8).shape == (2, 3, 8, 8)
    with pytest.raises(SystemExit, match="no styles to mix"):
        train.main(TINY + ["--config", "table1-b", "--mixing", "0.5", "--out", str(tmp_path / "x")])


# ----------------------------------------------------------------------------------------------
# Mixed precision

def penalty_at(D, reals, amp, r1_precision):
    args = train.get_args(["--amp", amp, "--r1-precision", r1_precision])
    args.device = torch.device("cpu")
    return train.r1_penalty(D, reals, 1.0, args)[1].detach()


@pytest.mark.parametrize("res", [8, 16, 32, 64, 128, 256, 512, 1024])
def test_r1_under_the_default_autocast_is_within_1_percent_of_fp32(res, monkeypatch):
    """The full-size D (official 1024 config) on built-in faces at each resolution: the R1 penalty
    of the default pass (--r1-precision fp32 under bf16 autocast) within 1% of fp32 for every image,
    while the same pass under bf16 autocast (--r1-precision amp) is off by 1.4-6.7% (README,
    "Mixed precision"): the test can tell the two apart. 1024: about 30 s on 2 CPU cores."""
    import data
    monkeypatch.setattr(kernels, "IMPL", "ref")
    torch.manual_seed(0)
    D = sg.Discriminator(sg.StyleGANConfig())
    source = data.BuiltinSource()
    reals = torch.stack([torch.from_numpy(source._image(i, res)) for i in range(2)]).float() / 127.5 - 1
    fp32 = penalty_at(D, reals, "off", "fp32")
    default = penalty_at(D, reals, "bf16", train.get_args([]).r1_precision)
    assert ((default - fp32).abs() / fp32).max() <= 0.01
    amp = penalty_at(D, reals, "bf16", "amp")
    print(f"{res}: bf16 autocast off fp32 by {((amp - fp32).abs() / fp32).max():.2%}")
    assert not torch.equal(amp, fp32)  # autocast did reach the pass that --r1-precision amp asks for


def scaled_state(G, D, G_ema):
    return [G.w_avg.clone(), *[p.clone() for p in G_ema.parameters()], *[p.clone() for p in D.parameters()]]


@pytest.mark.parametrize("where", ["D", "G"])
def test_a_step_fp16_dropped_moves_nothing(where):
    """An overflow in D's (or G's) gradients: the update is dropped, and neither w_avg nor G_ema
    moves (nor D, when D's update was the one dropped); train_step says so by returning None."""
    torch.manual_seed(0)
    cfg = sg.StyleGANConfig(resolution=8, fmap_base=64, fmap_max=16, z_dim=16, w_dim=16, mapping_fmaps=16)
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    args = train.get_args(["--amp", "fp16"])
    args.device = torch.device("cpu")
    scalers = train.make_scalers(args)
    opt_G, opt_D = train.adam(G, 0.01), train.adam(D, 0.01)
    phase = train.Phase(8, 1.0, 4, 0.01)
    step = lambda: train.train_step(G, D, G_ema, opt_G, opt_D, scalers, torch.rand(4, 3, 8, 8) * 2 - 1,  # noqa: E731
                                    torch.randn(4, 16), torch.randn(4, 16), phase, args)
    assert step() is not None  # an ordinary step: G_ema moves
    net = D if where == "D" else G
    hook = net.mapping.layers[0].weight if where == "G" else net.dense1.weight
    handle = hook.register_hook(lambda g: g * float("inf"))
    before = scaled_state(G, D, G_ema)
    assert step() is None
    handle.remove()
    after = scaled_state(G, D, G_ema)
    n_D = len(list(D.parameters()))
    for i, (a, b) in enumerate(zip(before, after)):
        if where == "G" and i >= len(after) - n_D:
            continue  # D's update of that step stood
        assert torch.equal(a, b), i
    assert scalers[1 if where == "D" else 0].get_scale() < train.SCALE_INIT


def test_a_dropped_step_does_not_count_its_images(tmp_path, monkeypatch):
    real_step, calls = train.train_step, []

    def dropping(*a, **k):
        calls.append(1)
        return None if len(calls) == 3 else real_step(*a, **k)
    monkeypatch.setattr(train, "train_step", dropping)
    ckpt = load(run(tmp_path, "--kimg", "0.064"))
    assert (ckpt["cur_nimg"], ckpt["step"], ckpt["seen_nimg"]) == (64, 9, 72)


def test_fp16_drops_no_step_in_1000(tmp_path):
    """fp16 autocast with the scaler's start and cap (SCALE_INIT, SCALE_MAX): the first 1,000 steps of a
    small run (R1 gamma 10) drop none for an overflow. (PyTorch's default start, 65536, dropped 3 of the
    first 100 steps of this run, with the R1 pass in fp16 or in fp32.)"""
    ckpt = load(run(tmp_path, "--amp", "fp16", "--start-res", "8", "--batch", "4", "--kimg", "4", "--tick-kimg", "4"))
    assert ckpt["step"] == 1000 and ckpt["cur_nimg"] == 4000


# ----------------------------------------------------------------------------------------------
# Lazy R1 (--r1-every)

def test_lazy_r1_adam_is_adjusted_as_stylegan2():
    args = train.get_args(["--r1-every", "16"])
    D = sg.Discriminator(sg.StyleGANConfig(resolution=8, fmap_base=64, fmap_max=16))
    group = train.adam(D, 0.002, train.d_ratio(args)).param_groups[0]
    assert group["lr"] == pytest.approx(0.002 * 16 / 17) and group["betas"] == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert train.d_ratio(train.get_args(["--data", "mine"])) == 1.0  # official StyleGAN: R1 every step, Adam as is
    assert train.get_args([]).r1_every == 16  # the quick preset's


def test_lazy_r1_step_is_the_penalty_weighted_by_k(monkeypatch):
    """R1's own D step: the gradient of K * gamma / 2 * mean penalty, nothing else."""
    torch.manual_seed(0)
    D = sg.Discriminator(sg.StyleGANConfig(resolution=8, fmap_base=64, fmap_max=16))
    args = train.get_args(["--r1-every", "4", "--amp", "off"])
    args.device = torch.device("cpu")
    reals = torch.randn(4, 3, 8, 8)
    _, penalty = train.r1_penalty(D, reals, 1.0, args)
    want = torch.autograd.grad(penalty.mean() * 4 * args.r1_gamma / 2, list(D.parameters()), allow_unused=True)
    got = []
    monkeypatch.setattr(train, "apply_update", lambda scaler, opt: got.extend(p.grad for p in D.parameters()) or True)
    train.r1_step(D, train.adam(D, 0.001), train.make_scalers(args)[1], reals, train.Phase(8, 1.0, 4, 0.001), args,
                  lambda params, extra=None: extra)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_lazy_r1_run_regularizes_every_kth_step(tmp_path, monkeypatch):
    real_r1_step, steps = train.r1_step, []

    def counting(*a, **k):
        steps.append(1)
        return real_r1_step(*a, **k)
    monkeypatch.setattr(train, "r1_step", counting)
    run_dir = run(tmp_path, "--kimg", "0.064", "--r1-every", "4")  # 8 steps of 8 images
    assert len(steps) == 2  # steps 0 and 4
    log = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]
    assert all(math.isfinite(row["penalty"]) and row["penalty"] > 0 for row in log)
    with pytest.raises(SystemExit, match="lazy regularization is for --loss r1"):
        run(tmp_path, "--kimg", "0.064", "--r1-every", "4", "--loss", "wgan-gp")


def test_shared_fakes_are_the_g_steps_fakes(monkeypatch):
    """--shared-fakes (the quick preset): one G forward per iteration. In fp64, D's gradient is that of
    the logistic loss + R1 on the fakes the G step then trains through (detached), and G's gradient
    that of the non-saturating loss through those same fakes; z_D is never read (NaN here). The
    official recipe keeps a G forward of its own for the D step."""
    monkeypatch.setattr(kernels, "INTERPRET", False)  # the CPU path train.py runs
    cfg = sg.StyleGANConfig(resolution=8, fmap_base=64, fmap_max=16, z_dim=16, w_dim=16, mapping_fmaps=16)
    args = train.get_args(["--amp", "off", "--shared-fakes", "--r1-every", "1"])
    args.device = torch.device("cpu")
    assert train.get_args([]).shared_fakes and not train.get_args(["--data", "mine"]).shared_fakes
    torch.manual_seed(0)
    G, D = sg.Generator(cfg).double(), sg.Discriminator(cfg).double()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    phase = train.Phase(8, 0.5, 4, 0.0)  # lr 0: D is the same network in both steps here
    reals = torch.rand(4, 3, 8, 8, dtype=torch.float64) * 2 - 1
    z_G = torch.randn(4, 16, dtype=torch.float64)
    torch.manual_seed(1)
    train.train_step(G, D, copy.deepcopy(G).requires_grad_(False), train.adam(G, 0.0), train.adam(D, 0.0),
                     train.make_scalers(args), reals, torch.full_like(z_G, math.nan), z_G, phase, args)
    torch.manual_seed(1)  # the same noise and mixing draws, in the same order
    fakes = G2(z_G, 8, 0.5, mixing=args.mixing)
    real_logits, penalty = train.r1_penalty(D2, reals, 0.5, args)
    loss_D = F.softplus(D2(fakes.detach(), 0.5)) + F.softplus(-real_logits) + penalty[:, None] * args.r1_gamma / 2
    want_D = torch.autograd.grad(loss_D.mean(), list(D2.parameters()))
    want_G = torch.autograd.grad(F.softplus(-D2(fakes, 0.5)).mean(), list(G2.parameters()), allow_unused=True)
    for net, want in ((D, want_D), (G, want_G)):
        for p, w in zip(net.parameters(), want):
            assert (p.grad is None) == (w is None)
            if w is not None:
                torch.testing.assert_close(p.grad, w, rtol=1e-9, atol=1e-12)


def test_mbstd_off_trains(tmp_path):
    """--mbstd-group 0: the official D without minibatch stddev (its 4x4 conv reads nf(1) channels)."""
    ckpt = load(run(tmp_path, "--kimg", "0.016", "--mbstd-group", "0"))
    assert ckpt["config"]["mbstd_group_size"] == 0
    assert ckpt["D"]["conv.weight"].shape[1] == 16  # nf(1) of the tiny network, no stddev channel


def test_channels_last_steps_are_the_nchw_steps(monkeypatch):
    """--memory-format channels_last (on_device; auto on a CPU) against NCHW. In fp64 over a
    stable phase, a fade and another stable phase, the same steps in NCHW and NHWC give the same
    losses (1e-10), gradients (1e-9 of each tensor's largest; measured 1e-10: sums in another order)
    and weights (1e-7; measured 6e-9: Adam divides by |g| + 1e-8, which scales rounding up where a
    gradient is small). A layout bug moves something by a step, lr = 1e-2. The layout did take."""
    monkeypatch.setattr(kernels, "INTERPRET", False)  # the CPU path train.py runs: no Triton interpreter
    cfg = sg.StyleGANConfig(resolution=8, fmap_base=64, fmap_max=16, z_dim=16, w_dim=16, mapping_fmaps=16)
    args = train.get_args(["--amp", "off", "--r1-every", "1"])
    args.device = cpu = torch.device("cpu")

    def fresh(layout):
        torch.manual_seed(0)
        G, D = sg.Generator(cfg).double(), sg.Discriminator(cfg).double()
        for p in [*G.parameters(), *D.parameters()]:
            if p.ndim == 1:  # noise weights off zero: at 0 the 4x4 plane is constant, its bias gradient 0
                p.data.normal_(0, 0.3)  # up to rounding, which Adam would scale up to full steps
        G, D = layout(G, cpu), layout(D, cpu)
        return train.State(cfg, G, D, copy.deepcopy(G).eval().requires_grad_(False), train.adam(G, 0.01),
                           train.adam(D, 0.01), train.make_scalers(args))
    plain, nhwc = fresh(train.on_device), fresh(lambda x, device: train.on_device(x, device, "channels_last"))
    assert nhwc.D.blocks[0].conv0.weight.is_contiguous(memory_format=torch.channels_last)
    assert not nhwc.D.blocks[0].conv0.weight.is_contiguous()
    for i, phase in enumerate([train.Phase(4, 1.0, 4, 0.01)] * 2 + [train.Phase(8, 0.5, 4, 0.01)] * 2
                              + [train.Phase(8, 1.0, 4, 0.01)] * 2):
        torch.manual_seed(i)
        z_D, z_G = torch.randn(2, 4, 16, dtype=torch.float64)
        reals = torch.rand(4, 3, phase.res, phase.res, dtype=torch.float64) * 2 - 1
        losses = []
        for s, x in ((plain, reals), (nhwc, train.on_device(reals, cpu, "channels_last"))):
            torch.manual_seed(1000 + i)  # the step's own draws: noise and style mixing
            losses.append(train.eager_step(s, x, z_D, z_G, phase, args, None, True))
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-10, atol=0)
    with torch.no_grad():
        assert nhwc.G_ema(z_G, 8, 1.0).is_contiguous(memory_format=torch.channels_last)
    for (name, a), b in zip([*plain.G.named_parameters(), *plain.D.named_parameters()],
                            [*nhwc.G.parameters(), *nhwc.D.parameters()]):
        assert (a.grad is None) == (b.grad is None), name  # None: 4x4's toRGB and fromRGB, unused at 8x8
        for what, x, y, tol in (("gradient", a.grad, b.grad, 1e-9), ("weight", a, b, 1e-7))[a.grad is None:]:
            err = ((y - x).abs().max() / x.abs().max()).item()
            assert err <= tol, f"{name} {what}: relative error {err:.1e}"


def test_memory_format_flag(tmp_path):
    """--memory-format: auto trains a CPU run in channels_last, nchw in NCHW; the weights a run saves
    keep its layout, and either loads into a fresh network."""
    for flag, layout, name in (("auto", torch.channels_last, "channels_last"),
                               ("nchw", torch.contiguous_format, "nchw")):
        run_dir = run(tmp_path, "--kimg", "0.016", "--memory-format", flag, name=flag)
        weights = load(run_dir)["G"]["synthesis.blocks.1.conv0.weight"]
        assert weights.is_contiguous(memory_format=layout), flag
        assert json.load(open(os.path.join(run_dir, "args.json")))["memory_format"] == name  # auto resolved
        sg.load_generator(os.path.join(run_dir, "ckpt.pt"))


def test_on_device_fuses_resampling_from_16_on_a_cpu():
    """on_device runs a CPU's resampling convs fused from 16x16 up (train.FUSED_FROM; the same
    function, tests/test_model.py) and leaves the official form, fused from 128, to CUDA; and it
    puts a CPU's equalized-lr scales into the weights (train.SCALE_IN_EPILOGUES)."""
    cfg = sg.StyleGANConfig(resolution=256, fmap_base=2048, fmap_max=8, z_dim=8, w_dim=8, mapping_fmaps=8)
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    official = {b.res: b.conv0.fused for b in G.synthesis.blocks if b.res > 4}
    assert official == {r: r >= 128 for r in (8, 16, 32, 64, 128, 256)}
    G, D = (train.on_device(net, "cpu") for net in (G, D))
    assert {b.res: b.conv0.fused for b in G.synthesis.blocks if b.res > 4} == {r: r >= 16 for r in official}
    assert {b.res: b.conv1.fused for b in D.blocks} == {r: r >= 16 for r in official}
    layers = [m for net in (G, D) for m in net.modules() if getattr(m, "feeds_epilogue", False)]
    assert len(layers) == (2 * 7 - 1) + (7 + 2 * 6 + 2) and not any(m.scale_after for m in layers)
    sg.fuse_resampling(G)  # the official form back
    assert {b.res: b.conv0.fused for b in G.synthesis.blocks if b.res > 4} == official


def test_resume_in_another_memory_format(tmp_path):
    """A checkpoint keeps the layout it was saved in (here NCHW), and the fused Adam walks a parameter
    and its moments as flat buffers: resumed mid-phase in channels_last, the moments follow the
    parameters (match_layout) and the next step's 3x3 weights equal the NCHW resume's to 1e-5
    (measured 2e-7; with the moments left in NCHW 1e-3 after one step)."""
    slow = ["--phase-kimg", "0.2"]  # 4x4 stable for 200 images: 32 and 40 lie in one phase, one Adam
    first = run(tmp_path, "--kimg", "0.032", "--memory-format", "nchw", *slow, name="first")
    weights = {}
    for layout in ("nchw", "channels_last"):
        shutil.copytree(first, tmp_path / layout)
        run(tmp_path, "--kimg", "0.04", "--resume", str(tmp_path / layout / "ckpt.pt"), "--memory-format", layout,
            *slow, name="unused")
        weights[layout] = load(tmp_path / layout)["G"]
    for name, a in weights["nchw"].items():
        if a.ndim == 4 and a.shape[-1] > 1:
            err = ((weights["channels_last"][name] - a).abs().max() / a.abs().max()).item()
            assert err <= 1e-5, f"{name}: relative error {err:.1e}"


# ----------------------------------------------------------------------------------------------
# CUDA graphs (--cuda-graphs): what a CPU can check

def test_graphed_steps_are_the_eager_steps(monkeypatch):
    """Three phases (4x4 stable, 8x8 fading, 8x8 stable), lazy R1 every 2nd step: every step's losses
    and, at the end, every weight and Adam moment equal eager training's bit for bit; each stable
    phase captured its two graphs (with and without R1) after WARMUP eager calls each, the fade none."""
    monkeypatch.setattr(kernels, "IMPL", "ref")  # the bookkeeping is the question, not the kernels
    cfg = sg.StyleGANConfig(resolution=8, fmap_base=64, fmap_max=16, z_dim=16, w_dim=16, mapping_fmaps=16)
    args = train.get_args(["--amp", "off", "--r1-every", "2"])
    args.device = torch.device("cpu")

    def fresh():
        torch.manual_seed(0)
        G, D = sg.Generator(cfg), sg.Discriminator(cfg)
        return train.State(cfg, G, D, copy.deepcopy(G).eval().requires_grad_(False), None, None,
                           train.make_scalers(args))
    plain, graphed, runner = fresh(), fresh(), ReplayedOnCPU()
    phases = [train.Phase(4, 1.0, 4, 0.01)] * 10 + [train.Phase(8, a, 4, 0.01) for a in (0.2, 0.5, 0.8)] \
        + [train.Phase(8, 1.0, 4, 0.01)] * 10
    for i, phase in enumerate(phases):
        for s in (plain, graphed):
            if s.phase_key != (phase.res, phase.alpha < 1):  # as begin_phase: fresh Adam
                s.opt_G, s.opt_D = train.adam(s.G, phase.lr), train.adam(s.D, phase.lr, train.d_ratio(args))
                s.phase_key = (phase.res, phase.alpha < 1)
        torch.manual_seed(i)
        z_D, z_G, reals = torch.randn(4, 16), torch.randn(4, 16), torch.rand(4, 3, phase.res, phase.res) * 2 - 1
        losses = []
        for s, step in ((plain, train.eager_step), (graphed, runner)):
            torch.manual_seed(1000 + i)  # the step's own draws: noise and style mixing
            losses.append(step(s, reals, z_D, z_G, phase, args, None, i % 2 == 0))
        assert torch.equal(*losses), i
    assert runner.captured == [(4, False)] * 2 + [(8, False)] * 2
    assert runner.replays == 2 * (10 - 2 * train.GraphedStep.WARMUP)
    def weights(s):
        return [t for net in (s.G, s.D, s.G_ema) for t in net.state_dict().values()]
    for a, b in zip(weights(plain), weights(graphed)):
        assert torch.equal(a, b)
    for a, b in ((plain.opt_D, graphed.opt_D), (plain.opt_G, graphed.opt_G)):
        for sa, sb in zip(a.state.values(), b.state.values()):
            assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_cuda_graphs_are_refused_where_they_cannot_run(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit, match="--cuda-graphs needs a CUDA GPU"):
        run(tmp_path, "--kimg", "0.016", "--cuda-graphs")
    assert not train.get_args([]).cuda_graphs  # off by default until a GPU run has measured it
