"""Shared pytest fixtures. The fake model and toy tasks they hand out are defined in tests/fakes.py."""

from __future__ import annotations

import pytest
import torch
from fakes import EXAMPLES, TinyBert, ToyTask


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is ~4x faster than several on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_model():
    """A fresh 2-layer BERT adapter (seed 0) that decodes through the real samplers."""
    return TinyBert(seed=0)


@pytest.fixture
def toy_task():
    return ToyTask()


@pytest.fixture
def toy_examples():
    return list(EXAMPLES)
