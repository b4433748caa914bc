"""Optimizer and VQGAN+CLIP Optimize Steps: the composable run (``vqgan_core.engine.Stepper``), plus Start New Run.

The latent an Optimize Steps node outputs carries its run's whole state, so the next Optimize Steps goes on
with the same run: k chained nodes of n steps give the image of one node of k*n steps.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..vqgan_core import GenerationConfig
from . import comfy_adapters as ca
from . import memory
from .optimize import (
    check_latent_model,
    method_input,
    snapshot_batch,
    snapshot_input,
    steps_input,
)
from .settings import setting_input
from .types import Latent, LossRecipe, VQGANModel, VQLatent, VQLoss, VQOptimizer

log = logging.getLogger(__name__)

CATEGORY = "vqgan_clip/sampling"
STATE_KEY = "engine"  # where a latent carries its composed run's state


class Optimizer(io.ComfyNode):
    """Optimiser name, learning rate and schedule."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: name, lr, schedule, schedule_steps."""
        return io.Schema(
            node_id="VQGAN_Optimizer", display_name="Latent Optimizer", category=CATEGORY,
            description="How the latent is moved: a torch optimiser with its learning rate and schedule.",
            inputs=[
                setting_input(GenerationConfig, "optimizer"),
                setting_input(GenerationConfig, "lr"),
                setting_input(GenerationConfig, "lr_schedule", widget="schedule"),
                io.Int.Input("schedule_steps", default=0, min=0, max=100000, step=1,
                             tooltip="Steps the schedule (and a linear init decay) spans. 0: the steps of the "
                             "Optimize Steps node that starts the run; for chained nodes set their total."),
            ],
            outputs=[VQOptimizer.Output(display_name="optimizer")],
        )

    @classmethod
    def execute(cls, optimizer: str, lr: float, schedule: str, schedule_steps: int) -> io.NodeOutput:
        """The spec (checked now)."""
        from ..vqgan_core import OptimizerSpec

        return io.NodeOutput(OptimizerSpec(optimizer, lr, schedule, schedule_steps))


class OptimizeSteps(io.ComfyNode):
    """Run N steps of (latent, VQGAN, loss, optimizer); chained nodes continue one run."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: four sockets, an optional mask, and steps / seed / method / preview_every."""
        return io.Schema(
            node_id="VQGAN_CLIPOptimizeSteps", display_name="VQGAN+CLIP Optimize Steps", category=CATEGORY,
            description="Moves the latent to lower the loss. The output latent carries the run (optimiser "
            "moments, schedule, random stream, step): a following Optimize Steps continues it exactly. The loss "
            "shows under the node while it runs; loss_curve plots it.",
            inputs=[
                VQGANModel.Input("vqgan", tooltip="The VQGAN that decodes the latent (Load VQGAN)."),
                VQLatent.Input("latent", tooltip="Where to start: Random VQ Latent, VQGAN Encode, or the latent of "
                               "another Optimize Steps (then its run goes on)."),
                VQLoss.Input("loss", tooltip="What to minimise: CLIP Loss, TV Loss, Image Loss, Init Image Loss, "
                             "Combine Losses."),
                VQOptimizer.Input("optimizer", tooltip="Latent Optimizer: name, learning rate, schedule."),
                steps_input(),
                setting_input(GenerationConfig, "seed", control_after_generate=True, tooltip="Random stream of cutouts and augmentations when this node starts a run. A latent "
                             "from another Optimize Steps continues that run's stream and this seed is not used: "
                             "to branch with a new seed, put a Start New Run node in between."),
                method_input(),
                setting_input(GenerationConfig, "preview_every"),
                snapshot_input(),
                io.Mask.Input("mask", optional=True, tooltip="Inpainting: only the masked area (> 0.5) changes; "
                              "the rest keeps the input latent."),
            ],
            outputs=[VQLatent.Output(display_name="latent"),
                     io.Image.Output(display_name="loss_curve", tooltip="The run's logged loss so far, as a plot."),
                     io.String.Output(display_name="losses", tooltip="step<TAB>loss lines of the whole run."),
                     io.Image.Output(display_name="snapshots", tooltip="The image every snapshot_every steps and "
                                     "at the end, as one IMAGE batch (for Save Animated WEBP/PNG).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, vqgan, latent: Latent, loss: LossRecipe, optimizer, steps: int, seed: int,  # noqa: ANN001
                preview_every: int, method: str = "z_quantize", mask: torch.Tensor | None = None,
                snapshot_every: int = 0) -> io.NodeOutput:
        """Build the run's parts, continue the latent's run when it carries one, and step."""
        from ..vqgan_core import GenerationConfig, LatentParam, Stepper, loss_table, plot_losses

        check_latent_model(latent, vqgan)
        node_id = ca.node_id(cls)
        state = latent.state.get(STATE_KEY)
        w, h = latent.pixel_size()
        estimate = GenerationConfig(width=w, height=h, batch_size=latent.batch, cutn=max(loss.cutn, 1), method=method)
        if loss.guides:
            memory.check_run(vqgan, list(loss.guides), estimate, max(loss.views, 1))
        needed = memory.run_memory(vqgan, list(loss.guides), estimate, max(loss.views, 1)) if loss.guides else 0
        memory.use(vqgan, *loss.guides, memory_required=needed)
        progress = ca.Progress(steps, models=(vqgan, *loss.guides), node_id=node_id)
        callbacks = progress.callbacks()
        frames: list[torch.Tensor] = []
        callbacks.save = lambda step, images: frames.append(images.detach().cpu())
        device = ca.compute_device()
        try:
            with torch.inference_mode(False):
                param = LatentParam(vqgan, latent.z.to(device), method=method, edit_mask=ca.first_mask(mask))
                term = loss.build()
                try:
                    run = Stepper(vqgan, param, term, optimizer, seed=seed, planned_steps=optimizer.schedule_steps
                                  or steps, callbacks=callbacks, preview_every=preview_every,
                                  save_every=snapshot_every, state=state)
                except ValueError as e:
                    if state is None:
                        raise
                    raise ValueError(f"This latent continues a run that this node cannot go on with: {e}. Connect "
                                     "the same loss and optimizer as the node before, or put a Start New Run node "
                                     "before this one.") from None
                result = run.run(steps)
        finally:
            for g in loss.guides:
                g.drop_copies()
        if progress.last_loss is not None:
            ca.send_text(node_id, f"done: {result.steps_done} steps · loss {progress.last_loss:.4f}")
        out = Latent(z=result.latent.detach().to(ca.output_device()), model=vqgan,
                     state={STATE_KEY: result.state})
        curve = plot_losses(result.losses).unsqueeze(0)
        return io.NodeOutput(out, curve, loss_table(result.losses), snapshot_batch(frames, result.images))


class StartNewRun(io.ComfyNode):
    """Forget the run a latent carries: the next Optimize Steps starts afresh from it (with its own seed)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent -> latent."""
        return io.Schema(
            node_id="VQGAN_StartNewRun", display_name="Start New Run", category=CATEGORY,
            description="Branch: the latent keeps its picture but forgets the optimiser state and random stream, "
            "so the next Optimize Steps starts a new run from it (with its own seed, loss and optimizer).",
            inputs=[VQLatent.Input("latent", tooltip="A latent, e.g. from an Optimize Steps node.")],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, latent: Latent) -> io.NodeOutput:
        """The same latent without run state."""
        return io.NodeOutput(Latent(z=latent.z, model=latent.model))
