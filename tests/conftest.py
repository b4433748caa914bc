"""Shared test fixtures: the taming golden fixtures (tests/fixtures/taming), and deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("TAMING_FIXTURES", REPO / "tests" / "fixtures" / "taming"))


@pytest.fixture(scope="session")
def taming_fixtures() -> Path:
    """Folder of the golden taming-transformers fixtures (part of the repository: a missing one is an error)."""
    if not (FIXTURES / "tiny_f4" / "last.ckpt").is_file():
        pytest.fail(f"taming fixtures not found at {FIXTURES} (they ship in tests/fixtures/taming; regenerate them "
                    "with `python tests/fixtures/make_taming_fixtures.py --taming PATH_TO_TAMING_CHECKOUT`)",
                    pytrace=False)
    return FIXTURES


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP barriers cost seconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random open_clip model saved in open_clip's folder layout (shared by the generation tests)."""
    from tests.gen_helpers import make_tiny_clip_dir

    return make_tiny_clip_dir(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def vqgan(taming_fixtures):
    """The tiny taming fixture VQGAN (f4), per test module (modules may define their own ``vqgan``)."""
    from vqgan_core import load_vqgan

    return load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt")


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    """The tiny random CLIP guide, per test module."""
    from vqgan_core.clip.guide import load_clip

    return load_clip(str(tiny_clip_dir))


@pytest.fixture
def tiny_registered(tmp_path, tiny_clip_dir):
    """The tiny CLIP config registered with open_clip as 'tiny-gen-test'; returns its weights file."""
    import json

    import open_clip

    from tests.gen_helpers import TINY_CLIP_CFG

    cfg_file = tmp_path / "tiny-gen-test.json"
    cfg_file.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(cfg_file)
    return tiny_clip_dir / "open_clip_model.safetensors"
