"""The composable engine: loss terms, the latent parameterisation, the optimiser spec and the stepper.

A run is built from parts, each with one job::

    from . import ClipLoss, LatentParam, OptimizerSpec, Stepper, TVLoss, Views

    loss = ClipLoss(guide_a, "a lighthouse", views=Views(cutn=16)) + ClipLoss(guide_b, "at dusk") + TVLoss(0.1)
    run = Stepper(vqgan, LatentParam(vqgan, z0), loss, OptimizerSpec("adam", 0.1), seed=1, planned_steps=100)
    result = run.run(50); result = run.run(50)   # == one run of 100 steps

``vqgan_core.engine.from_config`` builds the same parts from a ``GenerationConfig``.
"""

from .clip_loss import ClipLoss, Views
from .latent_param import LatentParam
from .optim_spec import SCHEDULERS, OptimizerSpec
from .run_info import RunInfo, StepContext, stream_seed
from .stepper import Stepper, StepResult, clip_terms
from .terms import INIT_DECAYS, ImageLoss, InitLoss, LossTerm, SumLoss, TVLoss

__all__ = [
    "INIT_DECAYS", "SCHEDULERS", "ClipLoss", "ImageLoss", "InitLoss", "LatentParam", "LossTerm", "OptimizerSpec",
    "RunInfo", "StepContext", "StepResult", "Stepper", "SumLoss", "TVLoss", "Views", "clip_terms",
    "stream_seed",
]
