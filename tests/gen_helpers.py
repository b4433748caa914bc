"""Shared helpers of the generation tests: a tiny random open_clip model saved in open_clip's folder layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 600, "width": 64, "heads": 2, "layers": 2},
}
MERGES = ["r e", "e d</w>", "b l", "bl u", "blu e</w>", "c i", "ci r", "cir c", "g r", "gr e"]


def make_tiny_clip_dir(folder: Path, seed: int = 0) -> Path:
    """Write open_clip_config.json + open_clip_model.safetensors + bpe_vocab.txt.gz for a 0.2 M-param CLIP."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**TINY_CLIP_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    cfg = {"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
           "tokenizer_cfg": {"bpe": "bpe_vocab.txt.gz", "context_length": 16}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    with gzip.open(folder / "bpe_vocab.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n" + "\n".join(MERGES))
    return folder

