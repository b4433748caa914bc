"""Run inside a real ComfyUI (CPU): the pack's models live in ComfyUI's memory manager.

Used by ``tests/nodes/test_comfyui_memory.py`` (``python tests/comfyui_memory_check.py COMFYUI_DIR``): imports ComfyUI's
``comfy.model_management`` with ``--cpu``, the pack as ComfyUI imports it (a package under its folder name),
runs the nodes like ComfyUI's executor does (under ``torch.inference_mode``) and prints ``OK <check>`` per check.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(comfy_dir: str) -> None:
    sys.argv = ["main.py", "--cpu"]
    sys.path.insert(0, comfy_dir)
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.model_management as mm
    import torch

    spec = importlib.util.spec_from_file_location("vqgan_clip", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["vqgan_clip"] = pack
    spec.loader.exec_module(pack)
    from vqgan_clip.nodes import memory
    from vqgan_clip.nodes.latent import VQGANDecode
    from vqgan_clip.nodes.loaders import LoadCLIPGuide, LoadVQGAN, SeamlessVQGAN
    from vqgan_clip.nodes.optimize import VQGANCLIPGenerate

    def ours_loaded() -> set[str]:
        names = set()
        for p in mm.loaded_models():
            names |= {"vqgan"} if p.model is vq else {"clip"} if p.model is guide.model else set()
        return names

    with torch.inference_mode():  # what ComfyUI's executor does around every node
        vq = LoadVQGAN.execute("demo").result[0]
        guide = LoadCLIPGuide.execute("demo", "none").result[0]
    assert memory.patcher_of(vq) is not None and memory.patcher_of(guide.model) is not None
    assert ours_loaded() == set(), "loading alone must not put models on the GPU"
    print("OK registered, not loaded until used")

    def generate(model) -> torch.Tensor:  # noqa: ANN001
        with torch.inference_mode():
            return VQGANCLIPGenerate.execute(model, guide, "a red circle", 64, 64, 3, "adam", 0.1, 4, "latest",
                                             "Af,Pe,Ji,Er", 1, 0).result[0]

    first = generate(vq)
    assert ours_loaded() == {"vqgan", "clip"}, ours_loaded()
    print("OK loaded through ComfyUI by Generate")

    memory.free_others(vq, guide)
    assert ours_loaded() == {"vqgan", "clip"}, "free_others must keep the run's own models"
    print("OK free_others keeps the run's models")

    assert "_lowp" not in guide.__dict__  # copies ComfyUI does not see end with the run
    with torch.inference_mode():
        mm.unload_all_models()  # another workflow needs the memory (ComfyUI does this under inference mode)
    assert ours_loaded() == set()
    print("OK unloaded by ComfyUI; no low-precision copies left behind")

    with torch.inference_mode():  # what a move by ComfyUI under inference mode leaves: inference tensors
        vq._apply(lambda t: t.clone())
    assert any(p.is_inference() for p in vq.parameters())
    again = generate(vq)
    assert torch.equal(first, again), "the same seed must give the same image after an unload and reload"
    assert not any(p.is_inference() for p in vq.parameters())
    print("OK reloaded with normal tensors; same image")

    with torch.inference_mode():
        twin = SeamlessVQGAN.execute(vq).result[0]
    assert memory.patcher_of(twin) is memory.patcher_of(vq)
    with torch.inference_mode():
        mm.unload_all_models()
        VQGANDecode.execute(VQGANCLIPGenerate.execute(twin, guide, "a tile", 64, 64, 2, "adam", 0.1, 4, "latest",
                                                      "Af", 1, 0).result[1])
    assert "vqgan" in ours_loaded()
    print("OK a seamless twin loads its original")


if __name__ == "__main__":
    main(sys.argv[1])
