"""What continues a generation run in another loop, node or session: the optimiser's state and the step count.

Why here: the ComfyUI Optimize node (chained nodes), Save/Load VQ Latent and the CLI's ``--resume`` all continue
runs; one definition keeps them equal. A run continued this way gives the same latent as one unbroken run
with the same settings (Adam's moments carry over, the story goes on from the saved step).
"""

from __future__ import annotations

from typing import Any

__all__ = ["continue_run", "run_state"]


def run_state(loop) -> dict[str, Any]:  # noqa: ANN001 - a GenerationLoop (import cycle)
    """``loop.state_dict()``: the optimiser, method, shape, steps of the whole run, optimiser state, seed and random
    stream [, the init pull-back's target, the schedule's state, the code distribution] (see
    ``GenerationLoop.state_dict``)."""
    return loop.state_dict()


def continue_run(loop, state: dict[str, Any], rng: bool = False) -> bool:  # noqa: ANN001
    """``loop.load_state_dict(state, rng)``: continue a :func:`run_state` when the optimiser and latent shape match.

    The loop must have been built with ``story_offset=state["steps"]`` for its story to go on too; ``rng``: a
    resume (the random stream, the init target and the schedule's state too, with ``schedule_offset``).
    """
    return loop.load_state_dict(state, rng=rng)
