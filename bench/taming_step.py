"""taming-transformers' VQGAN training step as PyTorch-Lightning 1.0.8 runs it, on vqgan_core/training modules.

For speed comparisons only (bench/bench_train.py ``--mode taming``). Written from
/work/shared/reference/TAMING.md §5 (no code copied). Per batch Lightning calls ``training_step`` once per
optimizer, each call a full ``VQModel.forward`` and a full ``VQLPIPSWithDiscriminator.forward``:

1. optimizer 0 (autoencoder). ``toggle_optimizer``: only the autoencoder's parameters require grad.
   ``xrec, qloss = model(x)``; L1 + LPIPS(x, xrec) -> nll; D(xrec) -> g_loss; adaptive weight from the
   gradients of nll and g_loss at ``decoder.conv_out.weight``; backward; Adam step; ``zero_grad()``.
2. optimizer 1 (discriminator). ``toggle_optimizer``: only D's parameters require grad.
   ``xrec, qloss = model(x)`` again (new weights; no graph: nothing in it requires grad), and **the
   loss computes L1 + LPIPS(x, xrec) before it branches on optimizer_idx**, so the discriminator step pays
   for a second LPIPS pass whose value it discards; then D(x) and D(xrec) in separate calls, hinge loss,
   backward, Adam step, ``zero_grad()``.

Lightning puts the whole module in train mode, so LPIPS's dropout layers are active (taming's LPIPS does not
override ``train()``), and D's BatchNorm uses batch statistics. The model runs taming's operations
(bench/taming_layers.py). Adam is PyTorch's default implementation (foreach on CUDA, not fused).
Remaining differences: bench/REPLICAS.md.
"""

from __future__ import annotations

import torch


def _toggle(trainable: torch.nn.Module, *frozen: torch.nn.Module) -> None:
    """Lightning's ``toggle_optimizer``: every parameter off, then the current optimizer's on."""
    for m in frozen:
        m.requires_grad_(False)
    trainable.requires_grad_(True)


def prepare(tr, taming_ops: bool = True) -> None:
    """Make a ``training.Trainer`` (fp32, NCHW) hold what taming's run holds (``taming_ops=False`` keeps
    vqgan_core's faster layers, only to measure the difference)."""
    from taming_layers import use_taming_layers

    if taming_ops:
        use_taming_layers(tr.model)
    if tr.loss.perceptual_loss is not None:
        for m in tr.loss.perceptual_loss.modules():
            if isinstance(m, torch.nn.Dropout):
                m.train()  # Lightning's model.train() reaches taming's LPIPS (vqgan_core's pins eval)
    kw = {"lr": tr.lr, "betas": tuple(tr.cfg.optim.betas), "eps": tr.cfg.optim.eps,
          "weight_decay": tr.cfg.optim.weight_decay}
    tr.opt_ae = torch.optim.Adam(tr.model.parameters(), **kw)  # configure_optimizers: plain Adam
    tr.opt_d = torch.optim.Adam(tr.disc.parameters(), **kw)


def step(tr, x: torch.Tensor, d_step_lpips: bool = True) -> dict[str, torch.Tensor]:
    """One batch: the autoencoder step, then the discriminator step, in taming's order (``d_step_lpips=False``
    drops the discriminator step's LPIPS pass, as the earlier replica did, only to measure its cost)."""
    model, loss, disc, gstep = tr.model, tr.loss, tr.disc, tr.step
    lp = loss.perceptual_loss
    # -- optimizer_idx 0 -------------------------------------------------------------------------------
    _toggle(model, disc)
    xrec, qloss, _ = model(x)
    ae_loss, logs = loss.generator_loss(x, xrec, qloss, gstep, model.get_last_layer(), disc, gan_when_inactive=True)
    ae_loss.backward()
    tr.opt_ae.step()
    tr.opt_ae.zero_grad()
    # -- optimizer_idx 1 -------------------------------------------------------------------------------
    _toggle(disc, model)
    xrec, qloss, _ = model(x)
    rec = torch.abs(x - xrec)
    if lp is not None and d_step_lpips:  # computed before the optimizer_idx branch; unused by the discriminator loss
        rec = rec + loss.cfg.perceptual_weight * lp(xrec, x)
    logs["nll_loss_d_step"] = rec.mean().detach()
    d_loss, dlogs = loss.discriminator_loss(x, xrec, gstep)  # D(x), D(xrec) in separate calls
    d_loss.backward()
    tr.opt_d.step()
    tr.opt_d.zero_grad()
    tr.step += 1
    logs.update(dlogs)
    return logs
