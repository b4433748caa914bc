"""Build the generator, loss (LPIPS + PatchGAN) and optimisers, from scratch or from a start point.

Start points: a taming training ``.ckpt`` (generator, ``loss.discriminator.*``, ``loss.perceptual_loss.*`` and the
two Adam states), one of our checkpoint folders, or any VQGAN ``.safetensors`` (generator only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqgan_core import (
    CONFIG_KEY,
    VQGAN,
    CheckpointError,
    VQGANConfig,
    check_state_dict_or_explain,
    generator_state_dict,
    read_safetensors,
    resolve_config,
    safe_torch_load,
)

from . import checkpointing as ck
from .config import TrainConfig
from .discriminator import NLayerDiscriminator, discriminator_state_from_taming, load_discriminator_state
from .losses import VQLPIPSWithDiscriminator
from .lpips import build_lpips

logger = logging.getLogger(__name__)
_TAMING_AE_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


@dataclass
class StartPoint:
    """What a start point provides beyond the generator."""

    model: VQGAN
    disc_state: dict[str, torch.Tensor] | None = None
    lpips_state: dict[str, torch.Tensor] | None = None
    optimizer_states: list[dict[str, Any]] = field(default_factory=list)  # [ae, disc], in our parameter order
    source: str = "scratch"
    train_state: dict[str, Any] | None = None  # our checkpoint's state.pt, read once (the trainer resumes from it)


def load_start_point(cfg: TrainConfig) -> StartPoint:
    """Generator (and what else the source holds) for ``cfg.init.from_checkpoint``; a fresh model if empty."""
    src = cfg.init.from_checkpoint
    if not src:
        return StartPoint(VQGAN(VQGANConfig.from_dict(dict(cfg.model))))
    path = Path(src)
    if ck.is_checkpoint_dir(path):
        sd, meta = read_safetensors(path / ck.WEIGHTS)
        sp = StartPoint(_vqgan_from(sd, meta, path / ck.WEIGHTS, None), ck.load_disc_weights(path), source=str(path))
        if (path / ck.STATE).is_file():
            sp.train_state = ck.load_state(path)
            sp.optimizer_states = list(sp.train_state.get("optimizers", []))
        return sp
    if path.suffix == ".safetensors":
        sd, meta = read_safetensors(path)
        config = None if CONFIG_KEY in meta else VQGANConfig.from_dict(dict(cfg.model))
        return StartPoint(_vqgan_from(sd, meta, path, config), source=str(path))
    return _from_taming(cfg, path)


def _vqgan_from(
    sd: dict[str, torch.Tensor], meta: dict[str, str] | None, path: Path, config: str | VQGANConfig | None
) -> VQGAN:
    """A VQGAN built from an already-read state dict (multi-GB checkpoints are read once, not once per use)."""
    vcfg = resolve_config(path, config, meta, sd)
    gen = generator_state_dict(sd, str(vcfg.extra.get("key_prefix", "")))
    cfg_source = "the file's metadata" if config is None and meta and CONFIG_KEY in meta else str(
        config or vcfg.extra.get("config_file") or "its weights")
    with torch.device("meta"):  # no random init of weights that are overwritten at once (and no RNG draws)
        model = VQGAN(vcfg)
    check_state_dict_or_explain(model, gen, path, cfg_source)
    model = model.to_empty(device="cpu")
    try:
        model.load_state_dict(gen)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model


def _from_taming(cfg: TrainConfig, path: Path) -> StartPoint:
    obj = safe_torch_load(path)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a taming checkpoint with a state_dict")
    config: Any = cfg.init.taming_yaml or None
    if config is None and cfg.model:
        config = VQGANConfig.from_dict(dict(cfg.model))
    try:
        model = _vqgan_from(sd, None, path, config)
    except ValueError as e:
        raise ValueError(f"{e} (set init.taming_yaml to the checkpoint's model.yaml, or the `model` section)") from None
    sp = StartPoint(
        model,
        discriminator_state_from_taming(sd) or None,
        {k: v for k, v in sd.items() if k.startswith("loss.perceptual_loss.")} or None,
        source=str(path),
    )
    opt = obj.get("optimizer_states") if isinstance(obj, dict) else None
    if opt and len(opt) == 2:
        # taming lists AE params as encoder, decoder, quantize, quant_conv, post_quant_conv in state_dict order.
        own = {n for n, _ in model.named_parameters()}
        taming_order = [k for p in _TAMING_AE_PREFIXES for k in sd if k.startswith(p) and k in own]
        sp.optimizer_states = [_reorder(opt[0], taming_order, [n for n, _ in model.named_parameters()]), opt[1]]
    return sp


def taming_lpips_state(src: str) -> dict[str, torch.Tensor] | None:
    """``loss.perceptual_loss.*`` of a taming ``.ckpt`` (so a resumed fine-tune keeps the LPIPS it started with)."""
    path = Path(src) if src else None
    if path is None or not path.is_file() or path.suffix == ".safetensors":
        return None
    obj = safe_torch_load(path)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
    return {k: v for k, v in sd.items() if k.startswith("loss.perceptual_loss.")} or None


def _reorder(state: dict[str, Any], src_names: list[str], dst_names: list[str]) -> dict[str, Any]:
    """Optimizer state dict whose integer param ids follow ``src_names``, re-indexed to ``dst_names``."""
    if sorted(src_names) != sorted(dst_names):
        raise ValueError("taming optimizer state does not cover the same parameters as the model")
    pos = {n: i for i, n in enumerate(src_names)}
    old = state["state"]
    new = {j: old[pos[n]] for j, n in enumerate(dst_names) if pos[n] in old}
    groups = [{**state["param_groups"][0], "params": list(range(len(dst_names)))}]
    return {"state": new, "param_groups": groups}


def build_loss(
    cfg: TrainConfig,
    lpips_state: dict[str, torch.Tensor] | None = None,
    disc_state: dict[str, torch.Tensor] | None = None,
    disc_source: str = "",
) -> VQLPIPSWithDiscriminator:
    """LPIPS + PatchGAN loss; a start point's discriminator is loaded when ``init.load_discriminator``."""
    lc = cfg.loss
    lp = None
    if lc.perceptual_weight > 0:
        lp = build_lpips(lc.lpips_chns, lc.lpips_weights, lc.vgg_weights, lc.lpips_random, lpips_state)
    disc = NLayerDiscriminator(3, lc.disc_ndf, lc.disc_num_layers)
    if disc_state and cfg.init.load_discriminator:
        load_discriminator_state(disc, disc_state, disc_source)
        logger.info("discriminator loaded from %s", disc_source)
    return VQLPIPSWithDiscriminator(lc, lp, disc)


def learning_rate(cfg: TrainConfig, world_size: int) -> float:
    """``optim.learning_rate`` if set, else taming's ``grad_accum * world * batch * base_learning_rate``."""
    if cfg.optim.learning_rate > 0:
        return cfg.optim.learning_rate
    return cfg.train.grad_accum * world_size * cfg.train.batch_size * cfg.optim.base_learning_rate


def build_optimizers(
    cfg: TrainConfig, model: torch.nn.Module, disc: torch.nn.Module, lr: float, fused: bool = False
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Taming's two Adams (betas (0.5, 0.9)); ``fused``: the vectorised kernel (CUDA and CPU)."""
    kw: dict[str, Any] = {
        "lr": lr,
        "betas": tuple(cfg.optim.betas),
        "eps": cfg.optim.eps,
        "weight_decay": cfg.optim.weight_decay,
    }
    if fused:
        kw["fused"] = True
    return torch.optim.Adam(model.parameters(), **kw), torch.optim.Adam(disc.parameters(), **kw)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any], lr: float, what: str) -> bool:
    """Load an optimiser state (moments from the file, hyperparameters ours); skip with a warning if shapes differ.

    Why ours: a resume or fine-tune that sets optim.learning_rate/betas/eps/weight_decay must get those values.
    """
    params = [p for g in opt.param_groups for p in g["params"]]
    st = state.get("state", {})
    if len(state.get("param_groups", [{}])[0].get("params", [])) != len(params) or any(
        "exp_avg" in s and s["exp_avg"].shape != params[i].shape for i, s in st.items()
    ):
        logger.warning("%s optimiser state does not fit the model; starting that optimiser fresh", what)
        return False
    ours = ("fused", "foreach", "capturable", "differentiable", "betas", "eps", "weight_decay")
    impl = [{k: g[k] for k in ours if k in g} for g in opt.param_groups]
    opt.load_state_dict(state)
    for g, keep in zip(opt.param_groups, impl, strict=True):
        g.update(keep, lr=lr)  # our kernel choice and hyperparameters, not the file's
    return True
