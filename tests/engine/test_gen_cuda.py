"""The generation loop on CUDA (marked ``gpu``; skipped without a GPU): the claims the CPU suite cannot check.

* no host synchronisation inside a step (``torch.cuda.set_sync_debug_mode("error")`` raises on any),
  with and without CUDA graphs; the graph is really captured and replayed;
* the random streams are seeded: the same seed gives the same initial latent and the same cutouts;
* the demo models actually learn on the GPU (the loss falls) in every precision mode;
* compiled blocks, the zoom animation, seamless runs (random rolls) and story crossfades (weights rewritten
  in place) run inside the captured graph;
* the CUDA-only fast paths (split GroupNorm, CLIP attention through SDPA on views) match PyTorch's modules;
* a real out-of-memory step (memory capped) switches to decoder checkpointing and finishes the run.

Run with ``python -m pytest -m gpu tests/engine/test_gen_cuda.py``.
"""

import pytest
import torch

from vqgan_core import load_vqgan
from vqgan_core.clip.guide import load_clip
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import GenerationLoop, run_generation
from vqgan_core.hub.demo import preset

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def models():
    return load_vqgan("demo", device="cuda"), load_clip("demo", device="cuda")


def _cfg(**kw) -> GenerationConfig:
    base = {**preset(), "prompts": "a red circle on a blue background", "steps": 30, "seed": 0, "log_every": 0}
    return GenerationConfig(**{**base, **kw})


@pytest.mark.parametrize("graph", [True, False])
@pytest.mark.parametrize(("precision", "seamless"), [("bf16", False), ("fp32", False), ("classic", False),
                                                     ("bf16", True)])
def test_no_host_sync_in_step(models, precision, graph, seamless):
    vqgan, clip = models
    loop = GenerationLoop(vqgan, clip, _cfg(precision=precision, augments=["Af", "Pe", "Ji", "Er", "Sh"],
                                            cutout_method="mixed", cuda_graph=graph, seamless=seamless))
    for m in (vqgan, clip.model):
        m.requires_grad_(False)
    for _ in range(4):  # lazy initialisations (optimiser state, constants), graph warm-up and capture
        loop.step()
    assert loop.graphed is graph
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            loss = loop.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


def test_same_seed_same_start_and_cutouts(models):
    vqgan, clip = models
    a, b = (GenerationLoop(vqgan, clip, _cfg()) for _ in range(2))
    assert torch.equal(a.z, b.z)
    img = a.render(a.z.detach())
    ca, cb = (loop.cutouts(img, clip.image_size, loop.gen) for loop in (a, b))
    assert torch.equal(ca, cb)
    c = GenerationLoop(vqgan, clip, _cfg(seed=1))
    assert not torch.equal(a.z, c.z)


@pytest.mark.parametrize(("precision", "graph"), [("bf16", True), ("bf16", False), ("fp16", True), ("fp32", True)])
def test_loss_falls_on_gpu(models, precision, graph):
    vqgan, clip = models
    r = run_generation(vqgan, clip, _cfg(precision=precision, log_every=1, cuda_graph=graph))
    first = sum(v for _, v in r.losses[:5]) / 5
    last = sum(v for _, v in r.losses[-5:]) / 5
    assert last < first - 0.02, (first, last)
    assert r.images.shape == (1, 3, 64, 64) and r.images.device.type == "cpu"


@pytest.mark.parametrize("deterministic", [False, True])
def test_repeat_run_report(models, capsys, deterministic):
    """Same seed twice: report how close (CUDA backward kernels of grid_sample/pooling use atomics)."""
    vqgan, clip = models
    a = run_generation(vqgan, clip, _cfg(deterministic=deterministic, steps=10))
    b = run_generation(vqgan, clip, _cfg(deterministic=deterministic, steps=10))
    diff = (a.images - b.images).abs().max().item()
    with capsys.disabled():
        print(f"\nCUDA same-seed repeat (deterministic={deterministic}): bit-identical={torch.equal(a.images, b.images)} "
              f"max|diff|={diff:.3g}")
    assert diff < 0.5


def test_story_mode_recaptures(models):
    vqgan, clip = models
    cfg = _cfg(prompts="a red circle on a blue background ^ a green square on a white background",
               change_prompts_every=5, steps=20, cuda_graph=True)
    loop = GenerationLoop(vqgan, clip, cfg)
    r = loop.run()
    assert r.steps_done == 20 and loop._graphed.captures >= 2  # a capture per phase after the warm-up


def test_story_fade_in_the_graph_matches_eager(models):
    """The fade's weights are rewritten in place between replays: the graph must see each step's mix."""
    vqgan, clip = models
    story = {"prompts": "a red circle on a blue background ^ a green square on a white background",
             "change_prompts_every": 6, "story_fade": 4, "steps": 18, "precision": "fp32", "log_every": 1,
             "augments": [], "aug_noise": 0.0}  # no random draws: graph and eager compute the same steps
    graphed = run_generation(vqgan, clip, _cfg(**story, cuda_graph=True))
    eager = run_generation(vqgan, clip, _cfg(**story, cuda_graph=False))
    assert torch.allclose(torch.tensor(graphed.losses), torch.tensor(eager.losses), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fast_paths_match_stock_ops_on_cuda(dtype):
    """The CUDA-only branches: split GroupNorm (channels_last, frozen) and CLIP attention through SDPA on
    views, forward and input gradients against PyTorch's own modules."""
    import torch.nn.functional as F

    from vqgan_core.clip.speed import ShortSeqAttention
    from vqgan_core.vqgan.layers import normalize

    g = torch.Generator(device="cuda").manual_seed(0)
    tol = {"atol": 0.05, "rtol": 0.05} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
    norm = normalize(128).cuda().to(dtype).requires_grad_(False)
    x = (torch.randn(1, 128, 32, 32, device="cuda", generator=g) * 2 + 1).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    gy = torch.randn(x.shape, device="cuda", generator=g).to(dtype)
    norm(x1).backward(gy)
    F.group_norm(x2.float(), 32, norm.weight.float(), norm.bias.float(), norm.eps).backward(gy.float())
    torch.testing.assert_close(x1.grad.float(), x2.grad, **tol)
    stock = torch.nn.MultiheadAttention(64, 4).cuda().to(dtype).eval().requires_grad_(False)
    fast = torch.nn.MultiheadAttention(64, 4).cuda().to(dtype).eval().requires_grad_(False)
    fast.load_state_dict(stock.state_dict())
    fast.__class__ = ShortSeqAttention
    q = torch.randn(50, 8, 64, device="cuda", generator=g).to(dtype)  # [L, N, E], as open_clip runs it
    q1, q2 = q.clone().requires_grad_(True), q.clone().requires_grad_(True)
    a = stock(q1, q1, q1, need_weights=False)[0]
    b = fast(q2, q2, q2, need_weights=False)[0]
    torch.testing.assert_close(b, a, **tol)
    gy = torch.randn(a.shape, device="cuda", generator=g).to(dtype)
    a.backward(gy)
    b.backward(gy)
    torch.testing.assert_close(q2.grad, q1.grad, **tol)


def test_compiled_blocks_inside_the_graph(models):
    """``compile="blocks"``: Triton kernels captured in the CUDA graph, no host sync, same result as eager."""
    vqgan, clip = models
    eager = run_generation(vqgan, clip, _cfg(precision="fp32", steps=8, log_every=1, cuda_graph=False))
    loop = GenerationLoop(vqgan, clip, _cfg(precision="fp32", steps=8, log_every=1, compile="blocks", cuda_graph=True))
    r = loop.run()
    assert loop.graphed and abs(r.losses[0][1] - eager.losses[0][1]) < 1e-3
    assert (r.images - eager.images).abs().mean() < 0.05


def test_set_latent_keeps_the_graph(models):
    """``set_latent`` (the zoom animation's frame step) copies in place: one capture serves every frame."""
    from vqgan_core.animation.animate import AnimationConfig, frame_transform

    vqgan, clip = models
    loop = GenerationLoop(vqgan, clip, _cfg(steps=30, cuda_graph=True))
    res = loop.run(max_steps=10)
    for _ in range(4):
        loop.set_latent(loop.encode_images(frame_transform(res.images, AnimationConfig(zoom=1.1))))
        res = loop.run(max_steps=5)
    assert loop.graphed and loop._graphed.captures == 1 and res.steps_done == 30


def test_edit_mask_with_graph_keeps_cells_without_sync(models):
    vqgan, clip = models
    left = torch.zeros(64, 64)
    left[:, :32] = 1
    loop = GenerationLoop(vqgan, clip, _cfg(steps=12, cuda_graph=True), edit_mask=left)
    start = loop.z.detach().clone()
    for _ in range(4):
        loop.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loop.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    h = loop.z.shape[-1] // 2
    assert loop.graphed and torch.equal(loop.z[..., h:], start[..., h:]) and not torch.equal(loop.z[..., :h], start[..., :h])


def test_checkpoint_decoder_in_the_graph_saves_memory(models):
    """Recomputed decoder blocks inside the CUDA graph: same loss, lower peak memory at 256²."""
    vqgan, clip = models
    peaks, losses = [], []
    for ckpt in (False, True):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        r = run_generation(vqgan, clip, _cfg(width=256, height=256, steps=6, log_every=1, cuda_graph=True,
                                             checkpoint_decoder=ckpt, cudnn_benchmark=False))  # no trial workspaces
        peaks.append(torch.cuda.max_memory_allocated())
        losses.append(r.losses[0][1])
    assert abs(losses[0] - losses[1]) < 1e-3 and peaks[1] < peaks[0], (losses, peaks)


@pytest.mark.parametrize("graph", [False, True])
def test_out_of_memory_switches_to_checkpointing(models, graph):
    """A real out-of-memory step (memory capped between the two runs' peaks) is retried with decoder
    checkpointing and the run finishes like one checkpointed from the start."""
    vqgan, clip = models

    def cfg(ckpt):
        return _cfg(width=512, height=512, steps=4, log_every=1, cuda_graph=graph, checkpoint_decoder=ckpt,
                    cudnn_benchmark=False)  # peaks without cuDNN's trial workspaces

    peaks = {}
    for ckpt in (False, True):
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        ref = run_generation(vqgan, clip, cfg(ckpt))
        peaks[ckpt] = torch.cuda.max_memory_allocated() - base
    torch.cuda.empty_cache()
    cap = torch.cuda.memory_allocated() + (peaks[False] + peaks[True]) / 2
    torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.get_device_properties(0).total_memory)
    try:
        loop = GenerationLoop(vqgan, clip, cfg(None))
        r = loop.run()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert loop._recomputing, peaks
    assert [s for s, _ in r.losses] == [s for s, _ in ref.losses]
    assert all(abs(a - b) < 1e-3 for (_, a), (_, b) in zip(r.losses, ref.losses, strict=True)), (r.losses, ref.losses)


@pytest.mark.parametrize("graph", [True, False])
def test_codebook_sampling_draws_in_the_graph_without_sync(models, graph):
    """The per-step code draw (Gumbel-max from the run's generator) is captured and replayed with no host sync."""
    vqgan, clip = models
    loop = GenerationLoop(vqgan, clip, _cfg(method="codebook_sampling", lr=0.3, optimizer="adamw", cuda_graph=graph,
                                            precision="bf16"))
    drawn = None  # what the decoder receives, copied inside the (captured) step

    def keep(_module, args):  # noqa: ANN001, ANN202
        nonlocal drawn
        if drawn is None:
            drawn = torch.empty_like(args[0])
        drawn.copy_(args[0].detach())

    loop._dec.register_forward_pre_hook(keep)
    for _ in range(4):
        loop.step()
    assert loop.graphed is graph
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        before = loop.z.detach().clone()
        seen = []
        for _ in range(3):
            loss = loop.step()
            seen.append(drawn.clone())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and not torch.equal(before, loop.z.detach())
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])  # every replay draws afresh
    r = loop.result()
    assert torch.equal(r.latent, vqgan.codebook.detach().float()[r.indices].permute(0, 3, 1, 2))


def test_composed_stepper_captures_and_learns(models):
    """The composable engine's Stepper (two CLIP terms + TV + init pull-back) replays one CUDA graph with no host
    sync in a step, and its chained halves equal one run (same graph-replayed random stream)."""
    from vqgan_core.engine import ClipLoss, InitLoss, LatentParam, OptimizerSpec, Stepper, TVLoss, Views

    vqgan, clip = models
    z0 = torch.randn(1, vqgan.codebook.shape[1], 4, 4, generator=torch.Generator().manual_seed(0)).cuda()

    def parts():
        loss = (ClipLoss(clip, "a red circle", views=Views(cutn=8)) + ClipLoss(clip, "a blue background", weight=0.5)
                + TVLoss(0.1) + InitLoss(0.2))
        return LatentParam(vqgan, z0), loss

    spec = OptimizerSpec("adam", 0.1)
    run = Stepper(vqgan, *parts(), spec, seed=3, planned_steps=20, log_every=1)
    for _ in range(4):
        run.step()
    assert run._graphed is not None and run._graphed.captures == 1
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            loss = run.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)
    whole = Stepper(vqgan, *parts(), spec, seed=3, planned_steps=20, log_every=1).run(20)
    half = Stepper(vqgan, *parts(), spec, seed=3, planned_steps=20, log_every=1).run(10)
    rest = Stepper(vqgan, LatentParam(vqgan, half.latent.cuda()), parts()[1], spec, state=half.state).run(10)
    assert whole.losses[-1][1] < whole.losses[0][1]
    assert torch.allclose(rest.latent, whole.latent, atol=1e-4)
