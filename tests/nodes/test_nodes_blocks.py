"""The composable graph blocks (CLIP Loss, TV / Image / Init Image Loss, Combine Losses, Latent Optimizer,
Optimize Steps, Start New Run) against the stub ComfyUI, with tiny random models."""

from __future__ import annotations

import pytest
import torch

from tests.nodes.node_helpers import harness, run

pytestmark = pytest.mark.usefixtures("comfy_state", "one_thread")


def _latent(pack, vqgan, seed=1):
    return run(pack.latent.RandomVQLatent, vqgan=vqgan, width=32, height=32, seed=seed, init="random", batch_size=1)[0]


def _loss(pack, guide, text="a red circle", **kw):
    (targets,) = run(pack.prompts.CLIPTextPrompt, text=text, weight=1.0)
    view = {"weight": 1.0, "cutouts": 3, "cutout_method": "latest", "cut_pow": 1.0, "augmentations": "Af,Ji",
            "aug_noise": 0.1, **kw}
    return run(pack.losses.CLIPLoss, clip_guide=guide, targets=targets, **view)[0]


def _steps(pack, vqgan, latent, loss, opt, steps, seed=0, **kw):
    return run(pack.steps.OptimizeSteps, vqgan=vqgan, latent=latent, loss=loss, optimizer=opt, steps=steps, seed=seed,
               preview_every=0, **kw)


def test_chained_step_nodes_equal_one_node(pack, vqgan, guide):
    """Three chained 2-step nodes == one 6-step node, bit for bit (the later seeds do not restart the stream)."""
    (tv,) = run(pack.losses.TVLoss, weight=0.2)
    (sym,) = run(pack.losses.ImageLoss, name="symmetry", weight=0.3)
    (init,) = run(pack.losses.InitImageLoss, weight=0.5, decay="linear")
    (loss,) = run(pack.losses.CombineLosses, loss_1=_loss(pack, guide), loss_2=tv, loss_3=sym, loss_4=init,
                  weight_1=1.0, weight_2=1.0, weight_3=0.5, weight_4=1.0)
    (opt,) = run(pack.steps.Optimizer, optimizer="adam", lr=0.1, schedule="cosine", schedule_steps=6)
    start = _latent(pack, vqgan)
    one, curve, table, _ = _steps(pack, vqgan, start, loss, opt, 6, seed=7)
    lat = start
    for k, seed in enumerate((7, 123, 456)):
        lat, _, chained_table, _ = _steps(pack, vqgan, lat, loss, opt, 2, seed=seed)
        assert lat.state["engine"]["step"] == 2 * (k + 1)
    assert torch.equal(lat.z, one.z)
    # log_every 10: steps 0 and the last; each chained node also logs its own last step, with the same values
    assert [line.split("\t")[0] for line in table.splitlines()] == ["0", "5"]
    assert set(table.splitlines()) <= set(chained_table.splitlines())
    assert curve.shape[0] == 1 and curve.shape[-1] == 3 and curve.std() > 0.05  # a plot, not a blank image
    (img_a,) = run(pack.latent.VQGANDecode, latent=lat)
    (img_b,) = run(pack.latent.VQGANDecode, latent=one)
    assert torch.equal(img_a, img_b)
    # a branch: Start New Run then another seed gives another image
    (fresh,) = run(pack.steps.StartNewRun, latent=one)
    assert fresh.state == {} and torch.equal(fresh.z, one.z)
    a, *_ = _steps(pack, vqgan, fresh, loss, opt, 2, seed=1)
    b, *_ = _steps(pack, vqgan, fresh, loss, opt, 2, seed=2)
    assert not torch.equal(a.z, b.z)


def test_cached_inputs_never_change(pack, vqgan, guide):
    """Re-running a node with the same (cached) inputs gives the same output: its inputs were not mutated."""
    loss = _loss(pack, guide)
    (opt,) = run(pack.steps.Optimizer, optimizer="adam", lr=0.1, schedule="constant", schedule_steps=0)
    first, *_ = _steps(pack, vqgan, _latent(pack, vqgan), loss, opt, 2)
    a, *_ = _steps(pack, vqgan, first, loss, opt, 2)
    b, *_ = _steps(pack, vqgan, first, loss, opt, 2)
    assert torch.equal(a.z, b.z) and first.state["engine"]["step"] == 2


def test_two_guides_with_their_own_prompts(pack, vqgan):
    """Prompt A with guide 1 and prompt B with guide 2 in one graph: each guide embeds only its own text."""
    g1, g2 = harness.tiny_guide(), harness.tiny_guide(image_size=12)
    seen = {1: [], 2: []}

    def spy(guide, log):  # noqa: ANN001, ANN202
        orig = guide.encode_text
        guide.encode_text = lambda texts: (log.extend(texts), orig(texts))[1]

    spy(g1, seen[1])
    spy(g2, seen[2])
    (loss,) = run(pack.losses.CombineLosses, loss_1=_loss(pack, g1, "apples"), loss_2=_loss(pack, g2, "pears"),
                  weight_1=1.0, weight_2=0.5, weight_3=1.0, weight_4=1.0)
    (opt,) = run(pack.steps.Optimizer, optimizer="adamw", lr=0.05, schedule="constant", schedule_steps=0)
    out, _, table, _ = _steps(pack, vqgan, _latent(pack, vqgan), loss, opt, 2)
    assert set(seen[1]) == {"apples"} and set(seen[2]) == {"pears"}
    assert "engine" in out.state and table


def test_continuing_with_other_parts_is_a_clear_error(pack, vqgan, guide):
    loss = _loss(pack, guide)
    (adam,) = run(pack.steps.Optimizer, optimizer="adam", lr=0.1, schedule="constant", schedule_steps=0)
    (adamw,) = run(pack.steps.Optimizer, optimizer="adamw", lr=0.1, schedule="constant", schedule_steps=0)
    lat, *_ = _steps(pack, vqgan, _latent(pack, vqgan), loss, adam, 1)
    with pytest.raises(ValueError, match="Start New Run"):
        _steps(pack, vqgan, lat, loss, adamw, 1)


def test_story_needs_a_pace_and_pace_drives_it(pack, vqgan, guide):
    (targets,) = run(pack.prompts.CLIPTextPrompt, text="red^blue", weight=1.0)
    view = {"weight": 1.0, "cutouts": 2, "cutout_method": "latest", "cut_pow": 1.0, "augmentations": "none",
            "aug_noise": 0.0}
    with pytest.raises(ValueError, match="CLIP Story Pace"):
        run(pack.losses.CLIPLoss, clip_guide=guide, targets=targets, **view)
    (paced,) = run(pack.losses.StoryPace, targets=targets, change_prompts_every=2, story_fade=0)
    (loss,) = run(pack.losses.CLIPLoss, clip_guide=guide, targets=paced, **view)
    term = loss.build()
    assert term.change_every == 2 and term.prompts.count("^") == 1
    assert pack.losses.StoryPace.validate_inputs(change_prompts_every=2, story_fade=3) is not True


def test_progress_text_shows_the_loss(pack, vqgan, guide, monkeypatch):
    sent = []
    monkeypatch.setattr(pack.comfy_adapters, "send_text", lambda node, text: sent.append((node, text)))
    monkeypatch.setattr(pack.steps.OptimizeSteps, "hidden", type("H", (), {"unique_id": "42"})())
    (opt,) = run(pack.steps.Optimizer, optimizer="adam", lr=0.1, schedule="constant", schedule_steps=0)
    _steps(pack, vqgan, _latent(pack, vqgan), _loss(pack, guide), opt, 3)
    assert sent and all(node == "42" for node, _ in sent)
    assert "loss" in sent[0][1] and sent[-1][1].startswith("done: 3 steps")
    assert pack.comfy_utils.UPDATES  # the progress bar moved too


def test_block_schemas_stay_small_and_explained(pack):
    """Every new block has at most 6 widgets and a tooltip on every input."""
    for cls in (pack.losses.CLIPLoss, pack.losses.TVLoss, pack.losses.ImageLoss, pack.losses.InitImageLoss,
                pack.losses.CombineLosses, pack.losses.StoryPace, pack.steps.Optimizer, pack.steps.OptimizeSteps,
                pack.steps.StartNewRun):
        schema = cls.define_schema()
        widgets = [i for i in schema.inputs if i.io_type in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
        assert len(widgets) <= 6, (schema.node_id, len(widgets))
        missing = [i.id for i in schema.inputs if not i.tooltip]
        assert not missing, (schema.node_id, missing)
        assert schema.description


def test_every_optimising_node_shows_its_loss(pack, vqgan, guide, monkeypatch):
    """Optimize, Generate, Zoom Animation and Restyle Frames show the loss under the node too."""
    sent = []
    monkeypatch.setattr(pack.comfy_adapters, "send_text", lambda node, text: sent.append((node, text)))
    common = {"optimizer": "adam", "lr": 0.1, "cutouts": 2, "cutout_method": "latest", "augmentations": "none",
              "seed": 0, "preview_every": 0}
    for cls in (pack.optimize.VQGANCLIPGenerate, pack.optimize.VQGANCLIPOptimize, pack.animate.VQGANCLIPZoomAnimation,
                pack.animate.VQGANCLIPRestyleFrames):
        assert any(h == pack.io.Hidden.unique_id for h in cls.define_schema().hidden), cls.__name__
    monkeypatch.setattr(pack.optimize.VQGANCLIPGenerate, "hidden", type("H", (), {"unique_id": "7"})())
    run(pack.optimize.VQGANCLIPGenerate, vqgan=vqgan, clip_guide=guide, prompt="red", width=32, height=32, steps=11,
        **common)
    assert [n for n, _ in sent] == ["7", "7"] and "step 1/11 · loss" in sent[0][1]  # steps 0 and 10 are read


def test_snapshots_are_an_image_batch_of_the_run(pack, vqgan, guide):
    (opt,) = run(pack.steps.Optimizer, optimizer="adam", lr=0.1, schedule="constant", schedule_steps=0)
    _, _, _, frames = _steps(pack, vqgan, _latent(pack, vqgan), _loss(pack, guide), opt, 5, snapshot_every=2)
    assert frames.shape == (4, 32, 32, 3)  # steps 0, 2, 4 and the result
    _, _, _, final = _steps(pack, vqgan, _latent(pack, vqgan), _loss(pack, guide), opt, 5)
    assert final.shape == (1, 32, 32, 3) and torch.equal(final[0], frames[-1])
    common = {"optimizer": "adam", "lr": 0.1, "cutouts": 2, "cutout_method": "latest", "augmentations": "none",
              "seed": 0, "preview_every": 0}
    image, _, snaps = run(pack.optimize.VQGANCLIPGenerate, vqgan=vqgan, clip_guide=guide, prompt="red", width=32,
                          height=32, steps=3, snapshot_every=1, **common)
    assert snaps.shape == (4, 32, 32, 3) and torch.equal(snaps[-1], image[0])
