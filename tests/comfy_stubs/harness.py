"""Import the node pack against the stub ComfyUI modules (used by tests/nodes/ and a few other tests).

``load_pack()`` puts this folder first on ``sys.path``, drops any cached ``comfy*``/``folder_paths``/pack modules,
imports the pack the way ComfyUI does (its ``__init__.py`` as a package, here named ``vqgan_clip``), and runs the
extension's set-up; ``unload_pack()`` undoes it, so other test files never see the stubs.

The pack's ``vqgan_core`` is the test process's own ``vqgan_core`` (one module object under both names), so
models and configs the tests build are the same classes the nodes check against.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

STUBS = str(Path(__file__).resolve().parent)
ROOTS = {"comfy", "comfy_api", "folder_paths", "vqgan_clip"}
PACK = "vqgan_clip"
REPO = Path(__file__).resolve().parents[2]


def _drop() -> dict[str, types.ModuleType]:
    gone = {k: m for k, m in sys.modules.items() if k.split(".")[0] in ROOTS}
    for k in gone:
        del sys.modules[k]
    return gone


def load_pack() -> tuple[types.SimpleNamespace, dict[str, types.ModuleType]]:
    """Import the pack with the stubs; returns (namespace of node modules + stubs, saved modules)."""
    saved = _drop()
    sys.path.insert(0, STUBS)
    importlib.invalidate_caches()


    import vqgan_core

    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = pack
    sys.modules[f"{PACK}.vqgan_core"] = vqgan_core
    spec.loader.exec_module(pack)
    ext = importlib.import_module(f"{PACK}.nodes.extension")
    ext.setup()
    ns = types.SimpleNamespace(
        extension=ext,
        folder_paths=importlib.import_module("folder_paths"),
        comfy_utils=importlib.import_module("comfy.utils"),
        mm=importlib.import_module("comfy.model_management"),
        io=importlib.import_module("comfy_api.latest.io"),
        **{name: importlib.import_module(f"{PACK}.nodes.{name}") for name in
           ("types", "comfy_adapters", "loaders", "latent", "codebook", "prompts", "optimize", "animate", "score",
            "workflow_api", "memory", "latent_files", "losses", "steps", "feed_forward")},
    )
    return ns, saved


def unload_pack(saved: dict[str, types.ModuleType]) -> None:
    """Remove the stubs and pack modules again (and the stub's temp folder); restore what was there before."""
    import shutil

    fp = sys.modules.get("folder_paths")
    if fp is not None and getattr(fp, "__file__", "").startswith(STUBS):
        shutil.rmtree(fp.base_path, ignore_errors=True)
    _drop()
    if STUBS in sys.path:
        sys.path.remove(STUBS)
    sys.modules.update(saved)


def object_info(node_cls: type) -> dict:
    """The /object_info entry ComfyUI would publish for a (stub-schema) V3 node class."""
    schema = node_cls.define_schema()
    req, opt, order = {}, {}, {"required": [], "optional": []}
    for i in schema.inputs:
        opts = dict(i.options)
        kind = i.io_type
        if kind == "COMBO":
            opts["options"] = list(opts.get("options") or [])
        (opt if i.optional else req)[i.id] = [kind, opts]
        order["optional" if i.optional else "required"].append(i.id)
    return {"input": {"required": req, "optional": opt}, "input_order": order,
            "output": [o.io_type for o in schema.outputs],
            "output_name": [o.display_name or o.io_type for o in schema.outputs],
            "name": schema.node_id, "display_name": schema.display_name, "output_node": schema.is_output_node}


def tiny_vqgan():  # -> vqgan_core.VQGAN
    """A random f4 VQGAN with 16 codes (fast on CPU; built outside inference mode like a loader)."""
    import torch

    from vqgan_core import VQGAN, VQGANConfig

    cfg = VQGANConfig(resolution=32, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(),
                      z_channels=8, embed_dim=8, n_embed=16)
    torch.manual_seed(0)
    with torch.inference_mode(False):
        model = VQGAN(cfg).eval().requires_grad_(False)
        with torch.no_grad():
            model.quantize.codebook.copy_(torch.randn_like(model.quantize.codebook))
    return model


def tiny_guide(image_size: int = 16, dim: int = 8):  # -> vqgan_core.clip.guide.ClipGuide
    """A deterministic toy CLIP (conv + pooling; hashed-character text embedding)."""
    import torch
    from torch import nn

    from vqgan_core.clip.guide import ClipGuide

    class ToyClip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, dim, 3, padding=1)
            self.text = nn.EmbeddingBag(64, dim)

        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3))

        def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.text(tokens)

    def tokenizer(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[ord(c) % 64 for c in (t + " " * 16)[:16]] for t in texts])

    torch.manual_seed(1)
    with torch.inference_mode(False):
        model = ToyClip().eval().requires_grad_(False)
    zeros, ones = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    return ClipGuide(model, tokenizer, image_size, zeros, ones, name="toy")
