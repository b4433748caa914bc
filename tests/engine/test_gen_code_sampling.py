"""Codebook sampling: logits over the codes of every cell, a seeded draw per step, straight-through gradient."""

import pytest
import torch

from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import GenerationLoop, run_generation
from vqgan_core.engine.run_state import continue_run, run_state
from vqgan_core.latents.code_sampling import INIT_CODE_PROBABILITY, CodeSampler
from vqgan_core.latents.files import LatentFile, load_latent, save_latent
from vqgan_core.objective.score import clip_scores

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    base = {"prompts": "a red circle", "width": 32, "height": 32, "steps": 6, "seed": 3, "cutn": 4, "precision": "fp32",
            "log_every": 1, "method": "codebook_sampling", "lr": 1.0}
    return GenerationConfig(**{**base, **kw})


def test_draws_follow_the_softmax_and_the_gradient_is_the_expected_codes(vqgan):
    codes = CodeSampler(vqgan)
    k = codes.k
    logits = torch.zeros(1, k, 50, 80)
    logits[:, :4] = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 4, 1, 1) + 6  # four codes hold ~all the mass
    logits.requires_grad_(True)
    z, idx = codes.sample(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(idx.flatten(), minlength=k).float() / idx.numel()
    assert torch.allclose(freq, logits.detach().softmax(1)[0, :, 0, 0], atol=0.015)
    assert torch.equal(z.detach(), codes.latent(idx))  # the decoder sees the drawn codes exactly
    w = torch.randn_like(z)
    (g,) = torch.autograd.grad((z * w).sum(), logits)
    ref = logits.detach().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((torch.einsum("bkhw,kc->bchw", ref.softmax(1), codes.vectors) * w).sum(), ref)
    assert torch.allclose(g, g_ref)
    again, idx2 = codes.sample(logits, torch.Generator().manual_seed(0))
    assert torch.equal(idx, idx2)  # seeded


def test_logits_from_a_latent_make_its_codes_most_likely(vqgan):
    codes = CodeSampler(vqgan)
    idx = torch.randint(0, codes.k, (2, 3, 5), generator=torch.Generator().manual_seed(1))
    z = codes.latent(idx) + 0.01 * torch.randn(2, vqgan.codebook.shape[1], 3, 5)  # near, not on, the codes
    logits = codes.logits_from_latent(z)
    assert torch.equal(logits.argmax(1), idx)
    p = logits.softmax(1).gather(1, idx.unsqueeze(1))
    assert torch.allclose(p, torch.full_like(p, INIT_CODE_PROBABILITY))
    latent, most = codes.most_likely(logits)
    assert torch.equal(most, idx) and torch.equal(latent, codes.latent(idx))


def test_the_run_is_seeded_and_moves_towards_the_prompt(vqgan, clip):
    a = run_generation(vqgan, clip, _cfg(steps=3))
    b = run_generation(vqgan, clip, _cfg(steps=3))
    assert torch.equal(a.images, b.images) and a.losses == b.losses
    loop = GenerationLoop(vqgan, clip, _cfg(steps=30, cutn=8))
    assert loop.z.shape == (1, vqgan.codebook.shape[0], 8, 8)  # logits over the codes, not a latent
    with torch.no_grad():
        before = clip_scores(clip, [("a red circle", 1.0)], loop.result().images)
    r = loop.run()
    with torch.no_grad():
        after = clip_scores(clip, [("a red circle", 1.0)], r.images)
    assert float(after) > float(before) + 3  # the most likely codes' image matches the prompt better
    assert r.latent.shape == (1, vqgan.codebook.shape[1], 8, 8)
    assert torch.equal(r.latent, CodeSampler(vqgan).latent(r.indices))  # the result is made of codes


def test_a_given_latent_starts_the_distribution_and_set_latent_replaces_it(vqgan, clip):
    start = run_generation(vqgan, clip, _cfg(method="z_quantize", steps=1)).latent
    loop = GenerationLoop(vqgan, clip, _cfg(steps=2), init_latent=start)
    codes = CodeSampler(vqgan)
    assert torch.equal(loop.latent(), codes.latent(codes.nearest(start)))
    other = codes.latent(torch.zeros(1, 8, 8, dtype=torch.long))
    loop.set_latent(other)
    assert torch.equal(loop.latent(), other)
    with pytest.raises(ValueError, match=r"set_latent needs shape \(1, 16, 8, 8\)"):
        loop.set_latent(torch.zeros(1, 16, 4, 4))


def test_edit_mask_keeps_the_cells_outside_in_every_draw(vqgan, clip):
    start = run_generation(vqgan, clip, _cfg(method="z_quantize", steps=1)).latent
    mask = torch.zeros(32, 32)
    mask[:, :16] = 1  # the left half may change
    loop = GenerationLoop(vqgan, clip, _cfg(steps=4), init_latent=start, edit_mask=mask)
    kept = CodeSampler(vqgan).latent(CodeSampler(vqgan).nearest(start))[..., 4:]
    for _ in range(4):
        _, z_q = loop._render(loop.z)
        assert torch.equal(z_q.detach()[..., 4:], kept)
        loop.step()
    assert torch.equal(loop.result().latent[..., 4:], kept)
    assert not torch.equal(loop.result().latent[..., :4], start[..., :4])


def test_resume_through_a_latent_file_equals_one_run(vqgan, clip, tmp_path):
    """The file carries the logits (the latent holds only the most likely codes): 3 + 3 steps == 6."""
    cfg = _cfg(steps=6, init_weight=0.5, init="pixels")
    whole = run_generation(vqgan, clip, cfg)
    first = GenerationLoop(vqgan, clip, cfg)
    first.run(max_steps=3)
    save_latent(tmp_path / "half.vqlatent", LatentFile.of(first.latent(), vqgan, run_state(first)))
    f = load_latent(tmp_path / "half.vqlatent")
    assert f.state["method"] == "codebook_sampling" and f.state["logits"].shape == first.z.shape
    rest = GenerationLoop(vqgan, clip, cfg.replace(steps=3), init_latent=f.z, story_offset=3, schedule_offset=3)
    assert continue_run(rest, f.state, rng=True)
    assert torch.equal(rest.run().latent, whole.latent)


def test_saved_logits_are_not_used_for_an_edited_latent_or_another_method(vqgan, clip, caplog):
    first = GenerationLoop(vqgan, clip, _cfg(steps=2))
    first.run()
    state = run_state(first)
    edited = first.latent()
    edited[..., 0, 0] = CodeSampler(vqgan).vectors[(first.z[0, :, 0, 0].argmax() + 1) % first.z.shape[1]].view(1, -1)
    loop = GenerationLoop(vqgan, clip, _cfg(steps=2), init_latent=edited)
    with caplog.at_level("INFO"):
        assert continue_run(loop, state)  # Adam's moments go on, the distribution starts from the edit
    assert "not the saved run's most likely codes" in caplog.text
    assert torch.equal(loop.latent(), edited)
    classic = GenerationLoop(vqgan, clip, _cfg(steps=2, method="z_quantize"), init_latent=first.latent())
    assert not continue_run(classic, state)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: z_quantize, codebook_sampling"):
        GenerationConfig(method="sample")


def test_random_start_checks_the_size_like_the_classic_method(vqgan, clip):
    with pytest.raises(ValueError, match="height 30 is not a multiple of the downsampling factor 4"):
        GenerationLoop(vqgan, clip, _cfg(height=30))
