"""CLIP Score: rate a batch of images against targets and rank it (pick the best seed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfy_api.latest import io, ui

from . import comfy_adapters as ca
from .types import ClipGuide, ClipTargets, Targets

CATEGORY = "vqgan_clip/score"


def clip_scores(guide, targets: Targets, images01: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Weighted cosine similarity x 100 of each image to the targets, averaged over the guides.

    ``score = 100 * sum_g w_g sum_t w_t cos(img, t) / (sum_g w_g * sum_t |w_t|)``; negative-weight
    targets lower the score. Whole images are embedded (no cutouts, no augmentation).

    Shape:
        images01: [B, 3, H, W] in [0, 1] -> [B]
    """
    from vqgan_core.clip_guide import ClipEnsemble

    if not targets.items:
        raise ValueError("CLIP Score needs at least one target: connect a CLIP Text Prompt or Image Prompt.")
    ens = ClipEnsemble.of(guide)
    total = torch.zeros(images01.shape[0])
    wsum = sum(w for _, w in ens.guides)
    tw = torch.tensor([t.weight for t in targets.items], dtype=torch.float32)
    for g, gw in ens.guides:
        img = F.normalize(g.encode_image(images01.to(g.device)).float(), dim=-1).cpu()
        embs = []
        for t in targets.items:
            e = g.encode_text([t.text]) if t.kind == "text" else g.encode_image(t.image.to(g.device))
            embs.append(F.normalize(e.float().mean(0), dim=-1).cpu())
        sims = img @ torch.stack(embs).T  # [B, T]
        total += gw * (sims * tw).sum(1) / tw.abs().sum().clamp_min(1e-8)
    return 100 * total / max(wsum, 1e-8)


class CLIPScore(io.ComfyNode):
    """IMAGE + targets -> scores, the batch sorted best first, and the best image."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: guide, targets, images -> ranked images, best, scores text."""
        return io.Schema(
            node_id="VQClip_Score",
            display_name="CLIP Score",
            category=CATEGORY,
            description="Scores each image of a batch against the targets (weighted cosine similarity x 100) "
            "and sorts the batch best first, e.g. to pick the best of several seeds.",
            inputs=[ClipGuide.Input("clip_guide"), ClipTargets.Input("targets"), io.Image.Input("images")],
            outputs=[io.Image.Output(display_name="ranked_images"), io.Image.Output(display_name="best_image"),
                     io.String.Output(display_name="scores"), io.Float.Output(display_name="best_score")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, clip_guide, targets: Targets, images: torch.Tensor) -> io.NodeOutput:  # noqa: ANN001
        """Score, sort descending, and show the scores on the node."""
        x = ca.image_to_bchw(images, ca.compute_device())
        with torch.no_grad():
            scores = clip_scores(clip_guide, targets, x)
        order = torch.argsort(scores, descending=True)
        ranked = images[order.to(images.device)]
        text = "\n".join(f"#{r + 1}: image {int(i)} score {float(scores[i]):.2f}" for r, i in enumerate(order))
        best = float(scores[order[0]])
        return io.NodeOutput(ranked, ranked[:1], text, best, ui=ui.PreviewText(text))
