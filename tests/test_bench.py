"""Tests for bench.py: `--smoke` runs every part in-process on the CPU and its JSON holds every
section with finite numbers that agree with each other; the FLOP counter agrees with torch's; the
count of a training iteration on fake tensors stays within its budget."""
import json
import math

import pytest
import torch

import bench
import kernels
import stylegan as sg
import train
from conftest import ReplayedOnCPU


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    impl = kernels.IMPL
    returned = bench.main(["--smoke", "--json", str(path)])
    assert kernels.IMPL == impl  # the training step's kernel choice does not leak out
    with open(path) as f:
        result = json.load(f)
    assert result.keys() == json.loads(json.dumps(returned)).keys()
    return result


def numbers(obj, where=""):
    """(path, value) of every number in a JSON tree, and (path, None) for every null."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{where}[{i}]")
    elif obj is None or (isinstance(obj, (int, float)) and not isinstance(obj, bool)):
        yield where, obj


def test_every_section_present(smoke):
    assert set(smoke) == {"meta", "count", "copy", "matmul", "kernels", "loader", "peak", "train", "graphs",
                          "projection", "profile"}
    assert smoke["meta"]["smoke"] is True and smoke["meta"]["device_type"] == "cpu"


def test_numbers_finite_and_nulls_explained(smoke):
    for section, tree in smoke.items():
        if section == "meta":  # e.g. the CUDA version is null on a CPU build
            continue
        for where, v in numbers(tree, section):
            if v is None:  # a column not measured must say why, in a sibling "<key>_note"
                parent, _, key = where.rpartition(".")
                node = smoke
                for part in parent.replace("]", "").replace("[", ".").split("."):
                    node = node[int(part)] if isinstance(node, list) else node[part]
                node = node if isinstance(node, dict) else {}
                assert node.get(f"{key}_note"), f"{where} is null without a note"
            else:
                assert math.isfinite(v), f"{where} = {v}"


def test_kernel_table(smoke):
    rows = smoke["kernels"]
    assert {(r["op"], r["res"], r["pass"]) for r in rows} == \
        {(op, res, p) for op in ("noise_adain", "bias_lrelu") for res in (4, 8) for p in ("fwd", "fwd+bwd")}
    copy_gbs = smoke["copy"]["gb_s"]
    for r in rows:
        N, C, H, W = r["shape"]
        x = N * C * H * W * 4  # fp32 on the CPU
        noise = N * H * W * 4 if r["op"] == "noise_adain" else 0
        assert r["bytes"] == (2 * x + noise if r["pass"] == "fwd" else 5 * x + 2 * noise)
        for impl in ("triton", "eager"):  # tests run with TRITON_INTERPRET=1 (conftest)
            m = r[impl]
            assert m["ms"] > 0
            assert m["gb_s"] == pytest.approx(r["bytes"] / m["ms"] / 1e6)
            assert m["pct_copy"] == pytest.approx(100 * m["gb_s"] / copy_gbs)
        assert r["compile"] is None and "skipped" in r["compile_note"]  # --compile auto: off on CPU


def test_train_table(smoke):
    rows = {(r["res"], r["recipe"]): r for r in smoke["train"]}
    assert set(rows) == {(8, 1), (16, 1), (8, 8), (16, 8)}
    for r in rows.values():
        assert r["img_s"] > 0 and r["sec_per_kimg"] * r["img_s"] == pytest.approx(1000)
        assert r["tflops"] == pytest.approx(r["flops_per_step"] / r["sec_per_step"] / 1e12)
        assert r["mfu"] == pytest.approx(100 * r["tflops"] / smoke["peak"]["tflops"])
        assert r["peak_mem_gb"] > 0 and r["loader_img_s"] > 0
    for res in (8, 16):  # every counted conv and matmul scales with the batch (8 vs 4); style
        # mixing (probability 0.9) adds a second mapping pass at random: 0.05% of the smoke count
        assert rows[(res, 1)]["flops_per_step"] == pytest.approx(2 * rows[(res, 8)]["flops_per_step"], rel=2e-3)
    assert rows[(16, 1)]["flops_per_step"] > rows[(8, 1)]["flops_per_step"]
    assert [r["res"] for r in smoke["loader"]] == [8, 16]


def test_projection(smoke):
    p = smoke["projection"]
    assert p["kimg_per_res"] == {"8": 600, "16": 24400}  # the smoke net stops growing at 16x16
    rows = {(r["res"], r["recipe"]): r for r in smoke["train"]}
    for gpus in (1, 8):
        want = sum(k * 1000 / (rows[(int(res), gpus)]["img_s"] * gpus) for res, k in p["kimg_per_res"].items())
        assert p[f"gpus_{gpus}"]["seconds"] == pytest.approx(want)
        assert p[f"gpus_{gpus}"]["official_seconds"] == {1: 3_556_800, 8: 568_800}[gpus]


def test_count_section(smoke):
    """The smoke count (the 16x16 smoke network, batch 8): totals that add up."""
    c = smoke["count"]
    assert (c["res"], c["batch"]) == (16, 8)
    assert c["launches"] == c["torch_launches"] + c["triton_launches"] and c["triton_launches"] > 0
    assert c["sec_per_kimg"] == pytest.approx(c["roofline_ms"] / c["batch"])
    assert c["roofline_ms"] >= c["launches"] * c["roofline"]["launch_us"] / 1e3 * (1 - 1e-9)  # a launch at least
    assert c["host_syncs"] == 0 and len(c["top"]) == 10
    assert sum(e["ms"] for e in c["top"]) <= c["roofline_ms"] * (1 + 1e-9)


def test_count_runs_the_real_step(monkeypatch):
    """The fake step is the real one: its FLOPs are exactly those FlopCounter measures on a real
    train_step (both with style mixing, which the count's draws always turn on)."""
    cfg = sg.StyleGANConfig(**bench.SMOKE_CFG)
    counted = bench.count_step(cfg, 16, 8, impl="ref")
    targs = bench.step_args(cfg, torch.device("cpu"), "off", "nchw", "--mixing", "1")
    monkeypatch.setattr(kernels, "IMPL", "ref")
    nets = [train.device_form(net, "cuda") for net in bench.make_nets(cfg, targs)]  # the count's: a GPU's
    real = bench.bench_step(nets, targs, 16, 8, steps=1, warmup=1)
    assert sum(row[3] for row in counted.rows) == real["flops_per_step"] > 0


# One training iteration of the official network at 32x32 with its batch of 64, bf16, counted on fake
# tensors. Before the blur, convolutions and bias gradients were written by hand and the weights
# prepared once, it was 2,796 launches (2,652 torch ops, 144 Triton), 24.2 GB, 23.7 ms at the H100
# roofline; then 1,029 launches (909 + 120), 21.3 GB, 17.9 ms. With the split-plane statistics in
# Triton, batched styles, weights scaled and cast in one launch and style mixing drawn on the device:
# 714 (560 + 154), 21.1 GB, 16.9 ms with the R1 pass under autocast, and 695 (541 + 154), 27.4 GB,
# 86.1 ms with it in fp32 (the default: fp32 math on CUDA cores, 66.9 TFLOP/s). With the epilogues'
# weight scales, bias_lrelu_pool and the minibatch stddev layer in Triton: 537 (375 + 162), 16.1 GB,
# 15.5 ms, and 526 (364 + 162), 21.0 GB, 84.3 ms. The budgets leave a few percent.
COUNT_BUDGET = {"amp": dict(launches=555, torch_launches=390, triton_launches=165, gb=16.6, roofline_ms=16.0),
                "fp32": dict(launches=545, torch_launches=380, triton_launches=165, gb=21.6, roofline_ms=86.0)}


@pytest.mark.parametrize("r1_precision", COUNT_BUDGET)
def test_count_budget(r1_precision):
    """A regression guard on the count, not a timer: launches, bytes and roofline time of a 32x32
    step stay within COUNT_BUDGET, no weight gradient runs as a convolution over a gradient map
    (autograd's double backward) or per group, and nothing reads a device value on the host."""
    cfg = sg.StyleGANConfig(resolution=32)
    r = bench.summarize_count(bench.count_step(cfg, 32, 64, r1_precision=r1_precision), 32, 64, top=1000)
    for key, budget in COUNT_BUDGET[r1_precision].items():
        assert r[key] <= budget, f"{key}: {r[key]:.4g} over the budget {budget}"
    assert not [e["name"] for e in r["top"] if "gradient map" in e["name"]]
    assert r["host_syncs"] == 0, r["host_sync_ops"]
    assert r["tflop"] == pytest.approx(12.27, rel=1e-3)  # the work itself is unchanged
    fp32_convs = [e for e in r["top"] if e["name"].startswith("aten.convolution") and e["name"].endswith(", fp32")]
    assert bool(fp32_convs) == (r1_precision == "fp32")  # the R1 pass: fp32 math, priced at fp32's rate


def test_count_of_lazy_r1_is_the_average_iteration():
    """--r1-every K: 1/K of an iteration with R1's own D step and (K-1)/K of one without."""
    cfg = sg.StyleGANConfig(**bench.SMOKE_CFG)
    one, k4 = (bench.summarize_count(bench.count_step(cfg, 16, 8, r1_every=k), 16, 8) for k in (1, 4))
    with_r1, without = (bench.summarize_count(bench.count_iteration(cfg, 16, 8, "auto", "bf16", 4, "fp32", r), 16, 8)
                        for r in (True, False))
    for key in ("launches", "gb", "tflop"):
        assert k4[key] == pytest.approx(with_r1[key] / 4 + without[key] * 3 / 4)
        assert without[key] < k4[key] < with_r1[key]
    assert with_r1["launches"] > one["launches"]  # R1's own step: a second D optimizer step, a second pass


def test_count_in_channels_last():
    """--memory-format channels_last in the count: the same work, every fused kernel in that layout
    too (D's bias_lrelu_blur included), so about the same launches and bytes (at 1024: 1,042 and
    39.6 GB against 984 and 39.2; the AdaIN kernels split channels_last planes into more chunks, and
    the stddev layer copies its 4x4 input and gradients to NCHW)."""
    cfg = sg.StyleGANConfig(**bench.SMOKE_CFG)
    nchw, cl = (bench.summarize_count(bench.count_step(cfg, 16, 8, layout=layout), 16, 8, top=100)
                for layout in ("nchw", "channels_last"))
    assert cl["tflop"] == pytest.approx(nchw["tflop"])
    assert nchw["launches"] <= cl["launches"] <= 1.1 * nchw["launches"] and cl["gb"] <= 1.05 * nchw["gb"]
    launches = [{e["name"]: e["launches"] for e in r["top"]} for r in (nchw, cl)]
    for name in ("triton _lrelu_blur_kernel", "aten.convolution (depthwise)"):  # no fallback to the two ops
        assert launches[0].get(name) == launches[1].get(name), name
    assert launches[1]["triton _lrelu_blur_kernel"] > 0


def test_count_sees_host_syncs_and_launches():
    """The counter's rules on a few ops: views and allocations launch nothing; a _foreach_ op over
    many tensors takes several launches; .item() of a device value is a host sync, of a tensor
    made without a device (the host's) it is not."""
    counter = bench.LaunchCounter()
    with bench.fake_gpu(counter, "auto"):
        x = torch.randn(8, 4)
        with bench.HostSide(counter), counter:
            x.t().reshape(32).view(4, 8)
            torch.empty(3)
            x.sum().item()
            float(torch.rand(()) < 0.5)
            torch._foreach_mul_([torch.ones(2, device=x.device) for _ in range(300)], 2.0)
    names = [name for name, *_ in counter.rows]
    assert names == ["aten.clone", "aten.sum", "aten.ones"] + ["aten.ones"] * 299 + ["aten._foreach_mul_.Scalar"]
    assert counter.rows[-1][1] == 3  # 300 tensors, at most 110 per launch
    assert counter.syncs == ["item"]


def test_graphs_part_compares_the_same_steps(monkeypatch, smoke):
    """The graphs part's runs, with a CPU stand-in for the CUDA graph (conftest.ReplayedOnCPU): the
    graphed run replays its graph and ends with the eager runs' weights, bit for bit. On a CPU the
    part itself says it was skipped."""
    assert smoke["graphs"] == dict(rows=[], note="skipped: CUDA graphs need a CUDA GPU")
    made = []

    class Recorded(ReplayedOnCPU):
        def __init__(self):
            super().__init__()
            made.append(self)
    monkeypatch.setattr(train, "GraphedStep", Recorded)
    monkeypatch.setattr(kernels, "IMPL", "ref")  # the runs' bookkeeping is the question, not the kernels
    cfg = sg.StyleGANConfig(**bench.SMOKE_CFG)
    runs = [bench.graphs_run(cfg, torch.device("cpu"), "off", 8, 4, 9, g) for g in (False, False, True)]
    assert len(made) == 1 and made[0].replays == 9 - train.GraphedStep.WARMUP
    for sec, weights in runs:
        assert sec > 0 and len(weights) == len(runs[0][1])
        assert all(torch.equal(a, b) for a, b in zip(weights, runs[0][1]))


def test_official_schedule_kimg():
    """8x8 for 600 kimg, then 1200 kimg (fade + stable) per resolution up to 512, and 1024 from
    7800 kimg (reached at 8.4M images once faded in) to the end at 25000."""
    kimg = bench.schedule_kimg(1024)
    assert kimg == {8: 600, 16: 1200, 32: 1200, 64: 1200, 128: 1200, 256: 1200, 512: 1200, 1024: 17200}


def test_profile(smoke):
    prof = smoke["profile"]
    assert prof["res"] == 16 and prof["ms_per_step"] > 0 and prof["ops"] and prof["clock"] == "CPU"
    assert 0 < sum(t["share"] for t in prof["ops"]) <= 100 + 1e-6
    assert prof["kernels"] == []  # GPU kernels only on CUDA


def test_flop_counter_matches_torch():
    """bench.FlopCounter (usable inside no_grad) counts what torch's FlopCounterMode counts on a
    forward and backward where the latter works."""
    from torch.utils.flop_counter import FlopCounterMode
    cfg = sg.StyleGANConfig(**bench.SMOKE_CFG)
    G, D = sg.Generator(cfg), sg.Discriminator(cfg)
    z = torch.randn(4, cfg.z_dim)

    def step():
        D(G(z, 16, noise_mode="const"), 1.0).sum().backward()

    with bench.FlopCounter() as ours:
        step()
    theirs = FlopCounterMode(display=False)
    with theirs:
        step()
    assert ours.flops == theirs.get_total_flops() > 0


@pytest.mark.slow
def test_scaling_two_processes(tmp_path):
    """--gpus 2 without CUDA: two gloo processes run train.py's data-parallel step; the projection
    then uses the measured efficiency for 8 GPUs."""
    result = bench.main(["--smoke", "--parts", "train,projection", "--gpus", "2", "--json", str(tmp_path / "b.json")])
    rows = result["scaling"]["rows"]
    assert [r["res"] for r in rows] == [8, 16] and result["scaling"]["gpus"] == 2
    for r in rows:
        assert r["img_s"] > 0 and r["efficiency"] == pytest.approx(r["img_s"] / (2 * r["img_s_1"]))
    p = result["projection"]
    assert p["scaling_source"] == "measured on 2 processes"
    assert p["scaling_efficiency"] == {r["res"]: r["efficiency"] for r in rows}


def test_bad_flags():
    with pytest.raises(SystemExit, match="--parts: unknown part"):
        bench.get_args(["--parts", "kernels,speed"])
    with pytest.raises(SystemExit, match="--train-res: resolutions must be powers of two"):
        bench.get_args(["--train-res", "8,12"])
    with pytest.raises(SystemExit, match="--recipes"):
        bench.get_args(["--recipes", "4"])
    with pytest.raises(SystemExit, match="add train"):
        bench.get_args(["--parts", "projection"])
    with pytest.raises(SystemExit, match="--profile-res: res must be a power of two between 4 and 16"):
        bench.main(["--smoke", "--parts", "profile", "--profile-res", "32"])
    with pytest.raises(SystemExit, match="--res: resolutions must be powers of two"):
        bench.get_args(["--parts", "count", "--res", "48"])
    with pytest.raises(SystemExit, match="--res: res must be a power of two between 4 and 16"):
        bench.main(["--smoke", "--parts", "count", "--res", "32"])


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        bench.get_args(["--help"])
    assert e.value.code == 0 and "--smoke" in capsys.readouterr().out


# A stand-in for rosinality's model.py (their port is never part of this repo): their call
# signatures, trivial networks, and a record of how bench.py calls them.
ROSINALITY_STAND_IN = '''
import torch
from torch import nn

CALLS = []


class StyledGenerator(nn.Module):
    def __init__(self, code_dim=512, n_mlp=8):
        super().__init__()
        self.style = nn.Linear(code_dim, 3)

    def forward(self, input, noise=None, step=0, alpha=-1, mixing_range=(-1, -1)):
        styles = input if isinstance(input, (list, tuple)) else [input]
        CALLS.append(("G", step, alpha, len(styles)))
        size = 4 * 2 ** step
        return sum(self.style(z) for z in styles)[:, :, None, None].expand(-1, -1, size, size)


class Discriminator(nn.Module):
    def __init__(self, fused=True, from_rgb_activate=False):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, input, step=0, alpha=-1):
        CALLS.append(("D", step, alpha, input.shape[2]))
        return self.linear(input.square().mean((2, 3)))
'''


def test_rosinality_side_by_side(tmp_path, monkeypatch):
    """The rosinality part trains ours and theirs with the same step at 8x8: their networks get step
    log2(res) - 2 and alpha 1, style mixing as two latents, and the row's rates add up."""
    path = tmp_path / "model.py"
    path.write_text(ROSINALITY_STAND_IN)
    loaded, load = [], bench.load_rosinality
    monkeypatch.setattr(bench, "load_rosinality", lambda p: loaded.append(load(p)) or loaded[-1])
    result = bench.main(["--parts", "rosinality", "--rosinality", str(path), "--res-list", "8", "--batch", "2",
                         "--rosinality-steps", "1", "--json", str(tmp_path / "b.json")])
    with open(tmp_path / "b.json") as f:
        assert json.load(f)["rosinality"] == json.loads(json.dumps(result["rosinality"]))
    row, = result["rosinality"]["rows"]
    assert (row["res"], row["batch"]) == (8, 2)
    for k in ("ours", "theirs"):
        assert len(row[k]["times"]) == 1 and row[k]["img_s"] == pytest.approx(2 / row[k]["sec_per_it"])
    assert row["ratio"] == pytest.approx(row["ours"]["img_s"] / row["theirs"]["img_s"])
    calls = loaded[0].CALLS
    assert {(net, step, alpha) for net, step, alpha, _ in calls} == {("G", 1, 1.0), ("D", 1, 1.0)}
    assert {n for net, *_, n in calls if net == "D"} == {8}
    assert 2 in {n for net, *_, n in calls if net == "G"}  # mixing 0.9, seeded: some draws mix


def test_rosinality_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.get_args(["--parts", "rosinality", "--rosinality", str(tmp_path / "model.py")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "git clone https://github.com/rosinality" in err
