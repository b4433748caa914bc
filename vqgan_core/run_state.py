"""What continues a generation run in another loop, node or session: the optimiser's state and the step count.

Why here: the ComfyUI Optimize node (chained nodes), Save/Load VQ Latent and the CLI's ``--resume`` all continue
runs; one definition keeps them equal. A run continued this way gives the same latent as one unbroken run
with the same settings (Adam's moments carry over, the story goes on from the saved step).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch.utils._pytree import tree_map

__all__ = ["continue_run", "run_state"]

log = logging.getLogger(__name__)


def run_state(loop) -> dict[str, Any]:  # noqa: ANN001 - a GenerationLoop (import cycle)
    """``{"optimizer", "method", "shape", "steps", "optimizer_state", "seed", "rng_device", "rng_state"[, "z_init",
    "lr_schedule", "logits"]}`` of ``loop`` now (copies: the loop goes on updating its own). ``steps`` counts from the start of the whole run,
    earlier loops included; the random stream of cutouts and augmentations is where this loop stopped;
    ``z_init`` is the init pull-back's target when the run has one; ``lr_schedule`` the state of a schedule that
    has one (plateau: the best loss so far, the checks since, the factor); ``logits`` the code distribution of a
    codebook-sampling run."""
    with torch.inference_mode(False):  # normal tensors: the next loop's optimiser updates them in place
        # on the CPU: a host (ComfyUI's cache) may keep states for long; load_state_dict moves them back
        opt_state = tree_map(lambda v: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor)
                             else copy.deepcopy(v), loop.opt.state_dict())
    state = {"optimizer": loop.config.optimizer, "method": loop.config.method, "shape": tuple(loop.z.shape),
             "steps": loop.story_offset + loop.step_index, "optimizer_state": opt_state, "seed": loop.config.seed,
             "rng_device": loop.gen.device.type, "rng_state": loop.gen.get_state()}
    schedule = loop.lr_schedule.state_dict()
    if schedule:  # e.g. plateau's best loss and patience count
        state["lr_schedule"] = {"name": loop.config.lr_schedule.lower(), "state": schedule}
    if loop.z_init is not None:  # the init pull-back's target (the run's start, not this loop's)
        state["z_init"] = loop.z_init.detach().cpu().clone()
    if loop.config.method == "codebook_sampling":  # the latent holds only the most likely codes
        state["logits"] = loop.z.detach().cpu().clone()
    return state


def continue_run(loop, state: dict[str, Any], rng: bool = False) -> bool:  # noqa: ANN001
    """Load a :func:`run_state` into ``loop``'s optimiser when the optimiser and latent shape match; the loop's
    learning rate wins over the stored one. Returns whether it did (otherwise the optimiser starts afresh).

    The loop must have been built with ``story_offset=state["steps"]`` for its story to go on too.
    ``rng``: a resume: also go on with the saved random stream (on the same device type), the init
    pull-back's target and the learning-rate schedule's state, so that the result equals one longer run (with ``schedule_offset=state["steps"]``
    too); without it the loop's own seed draws (chained ComfyUI nodes: each node's seed widget counts).
    """
    if rng and state.get("rng_state") is not None:
        if state.get("rng_device") == loop.gen.device.type:
            try:
                loop.gen.set_state(state["rng_state"])
            except RuntimeError as e:  # another torch version's generator layout
                log.warning("the saved random stream does not fit this torch (%s): it draws from its own seed", e)
        else:
            log.warning("the saved random stream is for %s, this run is on %s: it draws from its own seed",
                        state.get("rng_device"), loop.gen.device.type)
    if rng and loop.z_init is not None and state.get("z_init") is not None:
        if tuple(state["z_init"].shape) == tuple(loop.z_init.shape):
            with torch.inference_mode(False), torch.no_grad():
                loop.z_init.copy_(state["z_init"].to(loop.z_init.device, loop.z_init.dtype))
    saved = state.get("lr_schedule")
    if rng and isinstance(saved, dict) and saved.get("name") == loop.config.lr_schedule.lower():
        try:
            loop.lr_schedule.load_state_dict(saved["state"])
        except (KeyError, TypeError, ValueError) as e:
            log.warning("the saved learning-rate schedule state does not load (%s): it starts afresh", e)
    method = state.get("method", "z_quantize")
    if method != loop.config.method:
        log.info("the saved run used the %s method, this one %s: starting the optimiser afresh", method,
                 loop.config.method)
        return False
    if state.get("logits") is not None:
        loop.continue_logits(state["logits"])
    opt_state = state.get("optimizer_state")
    if opt_state is None:
        return False
    same_opt = str(state.get("optimizer", "")).lower() == loop.config.optimizer.lower()
    if not same_opt or tuple(state.get("shape", ())) != tuple(loop.z.shape):
        log.info("not continuing the optimiser state (saved: %s on %s; now: %s on %s): starting it afresh",
                 state.get("optimizer"), tuple(state.get("shape", ())), loop.config.optimizer, tuple(loop.z.shape))
        return False
    try:
        with torch.inference_mode(False):  # copies: a caller's (ComfyUI's cached) state must never change
            loop.opt.load_state_dict(copy.deepcopy(opt_state))
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # e.g. another optimiser version's layout
        log.warning("the saved optimiser state does not load (%s): starting it afresh", e)
        loop.opt.state.clear()
        return False
    for g in loop.opt.param_groups:
        g["lr"] = g["initial_lr"] = loop.config.lr
    return True

