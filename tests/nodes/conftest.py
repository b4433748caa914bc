"""Node-test fixtures, each set up once per test module: the pack imported against stub ComfyUI, tiny random models."""

from __future__ import annotations

import pytest

from tests.nodes.node_helpers import harness


@pytest.fixture(scope="module")
def pack():
    ns, saved = harness.load_pack()
    yield ns
    harness.unload_pack(saved)


@pytest.fixture(scope="module")
def vqgan():
    """A random f4 VQGAN with 16 codes (here in place of the taming fixture VQGAN of tests/conftest.py)."""
    return harness.tiny_vqgan()


@pytest.fixture(scope="module")
def guide():
    return harness.tiny_guide()


@pytest.fixture
def comfy_state(pack):
    """No recorded progress updates and no pending Cancel (``usefixtures`` it in the files that run nodes)."""
    pack.comfy_utils.UPDATES.clear()
    pack.mm.INTERRUPT.update(flag=False, after_checks=None, checks=0)
