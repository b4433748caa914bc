"""CLIP Score: rate a batch of images against targets and rank it (pick the best seed)."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from . import comfy_adapters as ca
from . import memory
from .types import GUIDE_TIP, TARGETS_TIP, ClipGuide, ClipTargets, Targets

CATEGORY = "vqgan_clip/score"


def clip_scores(guide, targets: Targets, images01: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """The core's weighted CLIP score of ``images01`` [B,3,H,W] in [0,1] against the node targets -> [B]."""
    from ..vqgan_core import clip_scores as core_scores

    pairs = [(t.text if t.kind == "text" else t.image, t.weight, t.region) for t in targets.items if t.kind != "noise"]
    return core_scores(guide, pairs, images01)  # noise prompts (random directions) say nothing about quality


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
            inputs=[ClipGuide.Input("clip_guide", tooltip=GUIDE_TIP), ClipTargets.Input("targets", tooltip=TARGETS_TIP), io.Image.Input("images", tooltip="The images to score and rank (a batch).")],
            outputs=[io.Image.Output(display_name="ranked_images"), io.Image.Output(display_name="best_image"),
                     io.String.Output(display_name="scores"), io.Float.Output(display_name="best_score")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, clip_guide, targets: Targets, images: torch.Tensor) -> io.NodeOutput:  # noqa: ANN001
        """Score, sort descending, and show the scores on the node."""
        x = ca.image_to_bchw(images, memory.use(clip_guide))
        with torch.no_grad():
            scores = clip_scores(clip_guide, targets, x)
        order = torch.argsort(scores, descending=True)
        ranked = images[order.to(images.device)]
        text = "\n".join(f"#{r + 1}: image {int(i)} score {float(scores[i]):.2f}" for r, i in enumerate(order))
        best = float(scores[order[0]])
        return io.NodeOutput(ranked, ranked[:1], text, best, ui=ui.PreviewText(text))
