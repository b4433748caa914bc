"""CLI PNGs and ComfyUI: the CLI writes ComfyUI's ``prompt``/``workflow`` chunks only as real graphs of this pack's
nodes (in the nodes' current widget order), ``--from-png`` reads images ComfyUI saved, and ``--resume`` restores
every setting of the run it continues."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from vqgan_core.cli import comfy_workflow as cw
from vqgan_core.cli.main import main
from vqgan_core.media.image_io import read_png_metadata

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("comfy_stub_harness_interop", REPO / "tests" / "comfy_stubs" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

# ComfyUI 0.3.64's Save Image (a core node: not in the stubs)
SAVE_IMAGE = {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
              "input_order": {"required": ["images", "filename_prefix"]}, "output": [], "output_name": [],
              "name": "SaveImage", "display_name": "Save Image"}
# the demo models with every setting the Generate node has no widget for at the node's value (the demo preset
# sets tv_weight, aug_noise, aug_padding and precision, which the node cannot)
DEMO = ["generate", "--device", "cpu", "--no-progress", "--size", "64", "64", "--tv-weight", "0", "--aug-noise", "0.1",
        "--aug-padding", "zeros", "--precision", "auto", "--cutouts", "latest", "--augments", "Af,Pe,Ji,Er",
        "--image-losses", ""]


@pytest.fixture(scope="module")
def object_info():
    """/object_info of the nodes a CLI workflow uses, built from the node pack's schemas (stub ComfyUI)."""
    ns, saved = harness.load_pack()
    try:
        info = {"SaveImage": SAVE_IMAGE}
        for cls in ns.extension.NODES:
            schema = cls.define_schema()
            info[schema.node_id] = harness.object_info(cls)
        yield info, ns.workflow_api
    finally:
        harness.unload_pack(saved)


def _text(path: Path) -> dict[str, str]:
    with Image.open(path) as im:
        return dict(im.text)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _comfy_png(path: Path, api: dict, workflow: dict | None = None) -> Path:
    """A PNG as ComfyUI's Save Image writes it: the API prompt JSON in ``prompt`` (and the graph in ``workflow``)."""
    info = PngInfo()
    info.add_text("prompt", json.dumps(api))
    if workflow is not None:
        info.add_text("workflow", json.dumps(workflow))
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_widget_order_and_sockets_follow_the_node_schemas(object_info):
    """The positional widget lists the CLI writes are rebuilt from the nodes' schemas: any drift fails here."""
    info, workflow_api = object_info
    for ntype, widgets in cw.NODE_WIDGETS.items():
        assert tuple(workflow_api.widget_names(info[ntype])) == widgets, ntype
        sockets = tuple((name, "COMBO" if isinstance(kind, list) else kind)
                        for name, kind, opts in workflow_api.input_specs(info[ntype])
                        if not workflow_api.is_widget(kind, opts))
        assert sockets == cw.NODE_SOCKETS[ntype], ntype
        assert tuple(zip(info[ntype]["output_name"], info[ntype]["output"], strict=True)) == cw.NODE_OUTPUTS[ntype]
        assert info[ntype]["display_name"] == cw.NODE_TITLES[ntype]


def test_cli_png_carries_a_comfyui_graph_that_is_its_api_prompt(object_info, tmp_path):
    """No text in ComfyUI's ``prompt`` chunk: it is the API prompt, and the ``workflow`` graph converts to it."""
    info, workflow_api = object_info
    out = tmp_path / "cli.png"
    assert main([*DEMO, "a red circle on a blue background", "--steps", "2", "--cutn", "4", "--seed", "3",
                 "--lr", "0.2", "--out", str(out)]) == 0
    text = _text(out)
    api = json.loads(text["prompt"])  # JSON, not the prompt text (the editor parses it)
    assert text["vqgan_clip_prompt"] == "a red circle on a blue background"
    assert workflow_api.ui_to_api(json.loads(text["workflow"]), info) == api
    gen = next(n for n in api.values() if n["class_type"] == "VQGAN_CLIPGenerate")["inputs"]
    assert gen["prompt"] == "a red circle on a blue background" and gen["seed"] == 3 and gen["steps"] == 2
    assert (gen["width"], gen["height"], gen["cutouts"], gen["lr"], gen["augmentations"]) == (64, 64, 4, 0.2,
                                                                                            "Af,Pe,Ji,Er")
    loaders = {n["class_type"]: n["inputs"] for n in api.values()}
    assert loaders["VQGAN_Load"] == {"vqgan_name": "demo"}
    assert loaders["VQClip_LoadGuide"] == {"clip_name": "demo", "pretrained": "none"}
    assert "SaveImage" in loaders


@pytest.mark.parametrize(("extra", "why"), [
    ([], "tv_weight=20.0"),  # the demo preset: settings the node has no widget for
    (["--cut-pow", "2"], "cut_pow=2.0"),
    (["--batch", "2"], "a batch of 2"),
])
def test_a_run_the_node_cannot_make_has_no_comfyui_chunks(tmp_path, caplog, extra, why):
    args = ["generate", "--device", "cpu", "--no-progress"] if not extra else DEMO
    out = tmp_path / "x.png"
    with caplog.at_level("DEBUG", logger="vqgan_core"):  # (why there is no graph: a debug line, -v shows it)
        assert main([*args, "red", "--steps", "1", "--cutn", "2", "--seed", "1", *extra, "--out", str(out)]) == 0
    pngs = sorted(tmp_path.glob("x*.png"))
    assert pngs and all(not {"prompt", "workflow"} & set(_text(p)) for p in pngs)
    assert all("vqgan_clip" in _text(p) for p in pngs)
    assert any("no ComfyUI workflow in the PNG" in r.message and why in r.message for r in caplog.records)


def test_model_files_map_to_their_names_with_a_note(object_info, taming_fixtures, tiny_clip_dir, tmp_path):
    info, workflow_api = object_info
    out = tmp_path / "x.png"
    assert main(["generate", "--vqgan", str(taming_fixtures / "tiny_f4" / "last.ckpt"), "--clip", str(tiny_clip_dir),
                 "--size", "32", "32", "--cutn", "2", "--device", "cpu", "--no-progress", "red", "--steps", "1",
                 "--seed", "2", "--out", str(out)]) == 0
    text = _text(out)
    api, ui = json.loads(text["prompt"]), json.loads(text["workflow"])
    assert workflow_api.ui_to_api(ui, info) == api  # the Note node is the editor's only
    loaders = {n["class_type"]: n["inputs"] for n in api.values()}
    assert loaders["VQGAN_Load"] == {"vqgan_name": "last.ckpt"}
    assert loaders["VQClip_LoadGuide"] == {"clip_name": f"local:{tiny_clip_dir.name}", "pretrained": "none"}
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert "models/vqgan" in note and str(tiny_clip_dir) in note


def test_images_before_the_end_map_only_with_a_constant_schedule():
    from vqgan_core.engine.config import GenerationConfig

    cfg = GenerationConfig(prompts="red", width=64, height=64, steps=4, seed=1, vqgan="demo", clip=["demo"]).to_dict()
    wf = cw.comfy_workflow(cfg, step=2)
    assert next(n for n in wf.api.values() if n["class_type"] == "VQGAN_CLIPGenerate")["inputs"]["steps"] == 2
    assert not cw.comfy_workflow({**cfg, "lr_schedule": "cosine"}, step=2).chunks()
    assert cw.comfy_workflow({**cfg, "lr_schedule": "cosine"}, step=4).chunks()
    assert not cw.comfy_workflow(cfg, step=0).chunks()  # the steps widget starts at 1
    assert not cw.comfy_workflow(cfg, resumed=True).chunks()


def test_from_png_of_the_cli_pngs_comfyui_graph_makes_the_same_image(tmp_path):
    """The embedded graph is the run: a PNG holding only the ``prompt`` chunk (as ComfyUI saves it) reproduces it."""
    out = tmp_path / "cli.png"
    assert main([*DEMO, "a red circle", "--steps", "3", "--cutn", "4", "--seed", "7", "--save-every", "2",
                 "--save-sequence", "--out", str(out)]) == 0
    for image, stop in ((out, 3), (tmp_path / "cli_00002.png", 2)):  # an image on the way: a 2-step graph
        api = json.loads(_text(image)["prompt"])
        assert next(n for n in api.values() if n["class_type"] == "VQGAN_CLIPGenerate")["inputs"]["steps"] == stop
        again = tmp_path / f"again{stop}.png"
        assert main(["generate", "--from-png", str(_comfy_png(tmp_path / f"comfy{stop}.png", api)), "--out",
                     str(again), "--device", "cpu", "--no-progress"]) == 0
        assert np.array_equal(_pixels(image), _pixels(again))


def _generate_api(seed_input=5, vqgan_name="demo", **widgets) -> dict:
    gen = {"prompt": "a yellow circle", "width": 64, "height": 64, "steps": 2, "optimizer": "adam", "lr": 0.1,
           "cutouts": 4, "cutout_method": "latest", "augmentations": "Af,Pe,Ji,Er", "seed": seed_input,
           "preview_every": 10, "low_memory": False, "lr_schedule": "constant", "change_prompts_every": 0,
           "story_fade": 0, "method": "z_quantize", "snapshot_every": 0, "vqgan": ["1", 0], "clip_guide": ["2", 0], **widgets}
    return {"1": {"inputs": {"vqgan_name": vqgan_name}, "class_type": "VQGAN_Load", "_meta": {"title": "Load VQGAN"}},
            "2": {"inputs": {"clip_name": "demo", "pretrained": "none"}, "class_type": "VQClip_LoadGuide"},
            "3": {"inputs": gen, "class_type": "VQGAN_CLIPGenerate"},
            "4": {"inputs": {"filename_prefix": "ComfyUI", "images": ["3", 0]}, "class_type": "SaveImage"}}


def _optimize_api() -> dict:
    models = {k: v for k, v in _generate_api().items() if k in ("1", "2")}
    return {**models,
            "3": {"class_type": "VQClip_TextPrompt", "inputs": {"text": "a yellow circle", "weight": 1.0}},
            "4": {"class_type": "VQGAN_RandomLatent", "inputs": {"vqgan": ["1", 0], "width": 64, "height": 64,
                                                                 "seed": 5, "init": "random", "batch_size": 1}},
            "5": {"class_type": "VQGAN_CLIPOptimize", "inputs": {
                "latent": ["4", 0], "vqgan": ["1", 0], "clip_guide": ["2", 0], "targets": ["3", 0], "steps": 2,
                "optimizer": "adam", "lr": 0.1, "cutouts": 4, "cutout_method": "latest", "augmentations": "Af,Pe,Ji,Er",
                "seed": 5, "init_weight": 0.0, "tv_weight": 0.0, "continue_run": True, "preview_every": 10,
                "image_losses": "", "low_memory": False, "lr_schedule": "constant", "change_prompts_every": 0,
                "story_fade": 0, "method": "z_quantize"}},
            "6": {"class_type": "VQGAN_Decode", "inputs": {"latent": ["5", 0]}},
            "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["6", 0]}}}


def test_from_png_of_a_comfyui_image_runs_as_the_cli_with_the_same_settings(tmp_path):
    """Generate, and Random VQ Latent -> Optimize <- CLIP Text Prompt, read from a ComfyUI PNG, give the CLI's image."""
    cli = tmp_path / "cli.png"
    assert main([*DEMO, "a yellow circle", "--steps", "2", "--cutn", "4", "--seed", "5", "--lr", "0.1",
                 "--out", str(cli)]) == 0
    for name, api in (("generate", _generate_api()), ("optimize", _optimize_api())):
        out = tmp_path / f"{name}.png"
        png = _comfy_png(tmp_path / f"comfy_{name}.png", api, workflow={"nodes": [], "links": []})
        assert main(["generate", "--from-png", str(png), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
        assert np.array_equal(_pixels(cli), _pixels(out)), name
        cfg = read_png_metadata(out)["config"]
        assert cfg["prompts"] == "a yellow circle" and cfg["cutn"] == 4 and cfg["tv_weight"] == 0.0


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error:") or "\nerror:" in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("api", "needle"), [
    (_generate_api(seed_input=["9", 0]), "node 3 (VQGAN_CLIPGenerate) input 'seed' comes from node 9"),
    (_generate_api(vqgan_name="mine.ckpt"), "node 1 (VQGAN_Load) input 'vqgan_name' is 'mine.ckpt'"),
    (_generate_api(vqgan_name="/etc/passwd"), "give --vqgan with its path"),
    (_generate_api(optimizer="nope"), "node 3 (VQGAN_CLIPGenerate) input 'optimizer' is 'nope'"),
    (_generate_api(extra_widget=1), "node 3 (VQGAN_CLIPGenerate) input 'extra_widget' has no command-line"),
    ({**_generate_api(), "9": _generate_api()["3"]}, "2 VQGAN+CLIP Generate/Optimize nodes"),
    ({"1": {"class_type": "KSampler", "inputs": {}}}, "no VQGAN+CLIP Generate or Optimize node"),
    ({**_optimize_api(), "4": {**_optimize_api()["4"], "inputs": {**_optimize_api()["4"]["inputs"], "seed": 6}}},
     "node 4 (VQGAN_RandomLatent) input 'seed' is 6"),
])
def test_from_png_of_a_comfyui_image_names_what_it_cannot_map(tmp_path, capsys, api, needle):
    png = _comfy_png(tmp_path / "comfy.png", api)
    assert main(["generate", "--from-png", str(png), "--out", str(tmp_path / "x.png"), "--no-progress"]) == 2
    assert needle in _error(capsys)
    assert not (tmp_path / "x.png").exists()


def test_old_cli_pngs_with_the_prompt_text_in_prompt_still_reproduce(tmp_path):
    new = tmp_path / "new.png"
    assert main([*DEMO, "red", "--steps", "1", "--cutn", "2", "--seed", "4", "--out", str(new)]) == 0
    info = PngInfo()  # as the CLI wrote before: the text in "prompt", the settings in "vqgan_clip"
    info.add_text("prompt", "red")
    info.add_text("vqgan_clip", _text(new)["vqgan_clip"])
    old, again = tmp_path / "old.png", tmp_path / "again.png"
    Image.open(new).save(old, pnginfo=info)
    assert main(["generate", "--from-png", str(old), "--out", str(again), "--device", "cpu", "--no-progress"]) == 0
    assert np.array_equal(_pixels(new), _pixels(again))


def test_resume_restores_every_setting_and_equals_one_longer_run(tmp_path, capsys):
    """The README's resume: no prompt, no --cutn repeated; also a run stopped early goes on to its planned end,
    flags still override, and a latent without settings (ComfyUI's Save VQ Latent) works as before."""
    from vqgan_core.latents.files import LatentFile, load_latent, save_latent

    run = ["generate", "--device", "cpu", "--no-progress", "a red circle", "--cutn", "3", "--seed", "5",
           "--lr-schedule", "cosine"]
    whole, half = tmp_path / "whole.png", tmp_path / "half.vqlatent"
    assert main([*run, "--steps", "4", "--out", str(whole)]) == 0
    assert main([*run, "--steps", "4", "--stop-at", "2", "--out", str(tmp_path / "h.png"), "--save-latent",
                 str(half)]) == 0
    rest = tmp_path / "rest.png"  # nothing repeated: the 2 steps its plan had left
    assert main(["generate", "--resume", str(half), "--out", str(rest), "--no-progress"]) == 0
    assert np.array_equal(_pixels(whole), _pixels(rest))
    cfg = read_png_metadata(rest)["config"]
    assert cfg["prompts"] == "a red circle" and cfg["cutn"] == 3 and cfg["steps"] == 2
    more = tmp_path / "more.png"  # --steps and other flags override the stored settings
    assert main(["generate", "--resume", str(half), "--steps", "1", "--cutn", "2", "--out", str(more),
                 "--no-progress"]) == 0
    assert read_png_metadata(more)["config"]["cutn"] == 2 and read_png_metadata(more)["config"]["steps"] == 1
    done = tmp_path / "done.vqlatent"  # a finished run goes on for as many steps as it ran
    assert main(["generate", "--resume", str(half), "--out", str(tmp_path / "r2.png"), "--no-progress",
                 "--save-latent", str(done)]) == 0
    assert main(["generate", "--resume", str(done), "--out", str(tmp_path / "r3.png"), "--no-progress",
                 "--save-latent", str(done)]) == 0
    assert load_latent(done).state["steps"] == 6
    bare = load_latent(half)  # as ComfyUI's Save VQ Latent writes it: no settings, so the flags give them
    bare.settings = None
    save_latent(tmp_path / "comfy.vqlatent", LatentFile(bare.z, bare.codebook_shape, bare.downsample_factor,
                                                        bare.state))
    assert main(["generate", "--resume", str(tmp_path / "comfy.vqlatent"), "--out", str(tmp_path / "c.png"),
                 "--no-progress"]) == 2
    assert "no prompts" in _error(capsys)
    assert main([*run, "--steps", "2", "--resume", str(tmp_path / "comfy.vqlatent"), "--out",
                 str(tmp_path / "c.png")]) == 0
    assert np.array_equal(_pixels(whole), _pixels(tmp_path / "c.png"))


def test_resume_refuses_stored_settings_that_name_files_unless_trusted(taming_fixtures, tmp_path, capsys):
    ckpt = str(taming_fixtures / "tiny_f4" / "last.ckpt")
    half = tmp_path / "half.vqlatent"
    assert main(["generate", "--vqgan", ckpt, "--clip", "demo", "--size", "32", "32", "--cutn", "2", "--device", "cpu",
                 "--no-progress", "red", "--steps", "1", "--seed", "1", "--out", str(tmp_path / "a.png"),
                 "--save-latent", str(half)]) == 0
    assert main(["generate", "--resume", str(half), "--out", str(tmp_path / "b.png"), "--no-progress"]) == 2
    err = _error(capsys)
    assert "last.ckpt" in err and "--trust-png" in err
    assert main(["generate", "--resume", str(half), "--trust-png", "--out", str(tmp_path / "b.png"),
                 "--no-progress"]) == 0
    assert read_png_metadata(tmp_path / "b.png")["config"]["vqgan"] == ckpt
