"""Shared test setup. Runs before any test module imports triton."""
import os
import sys

# One torch thread per process: the suite starts several processes (gloo ranks, loader workers) on
# small CI machines, where two spinning OpenMP threads per process made tests 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Triton kernels run on CPU tensors through the interpreter when no GPU is present. The variable
# must be set before triton is first imported, which is why it lives here.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests import the flat project files (stylegan.py, kernels.py, ...) from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402


@pytest.fixture
def no_tf32():
    """fp32 matmuls and convolutions on a GPU (not TF32) for one test, restored afterwards by hand:
    `allow_tf32` is served by a module __getattr__ in recent torch, so monkeypatch cannot undo it."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


class ReplayedOnCPU(train.GraphedStep):
    """GraphedStep with a CPU stand-in for the CUDA graph, with a CUDA graph's semantics: capturing
    records the step on static tensors without running it, and each replay runs it on them and
    writes the static output. So the bookkeeping (warm-up, static inputs, one graph per stable phase
    and R1 variant, fades eager) can be compared with plain eager steps."""

    def __init__(self):
        super().__init__()
        self.captured, self.replays = [], 0

    @staticmethod
    def eager(step, *inputs):
        return step(*inputs)

    def capture(self, step, *inputs):
        inputs, out = [x.clone() for x in inputs], torch.full((4,), float("nan"))
        self.captured.append(self.key)

        def replay():
            self.replays += 1
            out.copy_(step(*inputs))
        return type("Graph", (), dict(replay=staticmethod(replay)))(), inputs, out
