"""Tests for bench.py: `--smoke` runs every part in-process on the CPU and its JSON holds every
section with finite numbers that agree with each other; the FLOP counter agrees with torch's."""
import json
import math

import pytest
import torch

import bench
import kernels
import stylegan as sg


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
    assert set(smoke) == {"meta", "copy", "matmul", "kernels", "loader", "peak", "train", "projection", "profile"}
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


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        bench.get_args(["--help"])
    assert e.value.code == 0 and "--smoke" in capsys.readouterr().out
