"""Shared test setup. Runs before any test module imports triton."""
import os
import sys

import torch

# Triton kernels run on CPU tensors through the interpreter when no GPU is present. The variable
# must be set before triton is first imported, which is why it lives here.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests import the flat project files (stylegan.py, kernels.py, ...) from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
