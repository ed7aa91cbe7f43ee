"""Shared pytest set-up: keep torch to one thread per test process on the 2-core CI machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
