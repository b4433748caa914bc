"""Node definitions against stub ComfyUI modules: ids, widget limits, folders, workflows, clean import."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.nodes.node_helpers import REPO, harness

# Core ComfyUI nodes the shipped workflows use (their /object_info as in ComfyUI 0.3.64).
CORE = {
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}, "output": [], "output_name": []},
    "PreviewImage": {"input": {"required": {"images": ["IMAGE", {}]}}, "input_order": {"required": ["images"]},
                     "output": [], "output_name": []},
    "SaveAnimatedWEBP": {"input": {"required": {
        "images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}],
        "fps": ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}], "lossless": ["BOOLEAN", {"default": True}],
        "quality": ["INT", {"default": 80, "min": 0, "max": 100}], "method": [["default", "fastest", "slowest"]]}},
        "input_order": {"required": ["images", "filename_prefix", "fps", "lossless", "quality", "method"]},
        "output": [], "output_name": []},
    "SolidMask": {"input": {"required": {
        "value": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}],
        "width": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
        "height": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}]}},
        "input_order": {"required": ["value", "width", "height"]}, "output": ["MASK"], "output_name": ["MASK"]},
    "MaskComposite": {"input": {"required": {
        "destination": ["MASK"], "source": ["MASK"], "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
        "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
        "operation": [["multiply", "add", "subtract", "and", "or", "xor"]]}},
        "input_order": {"required": ["destination", "source", "x", "y", "operation"]}, "output": ["MASK"],
        "output_name": ["MASK"]},
    "LoadImage": {"input": {"required": {"image": [["x.png"], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"]},
}


def test_every_node_has_prefixed_unique_id_and_category(pack):
    ids = [cls.define_schema().node_id for cls in pack.extension.NODES]
    assert len(ids) == len(set(ids))
    assert all(i.startswith(("VQGAN_", "VQClip_")) for i in ids)
    for cls in pack.extension.NODES:
        s = cls.define_schema()
        assert s.category.startswith("vqgan_clip"), s.node_id
        assert s.display_name and s.description, s.node_id


def test_numeric_widgets_have_min_max_step_and_round_small_floats(pack):
    for cls in pack.extension.NODES:
        for i in cls.define_schema().inputs:
            if i.io_type in ("INT", "FLOAT"):
                for key in ("min", "max", "step", "default"):
                    assert i.options.get(key) is not None, f"{cls.__name__}.{i.id} lacks {key}"
                assert i.options["min"] <= i.options["default"] <= i.options["max"], f"{cls.__name__}.{i.id}"
            if i.io_type == "FLOAT":
                rnd = i.options.get("round")
                assert rnd is not None and rnd <= i.options["step"], f"{cls.__name__}.{i.id} needs round <= step"
                # the editor rounds to the step's precision: the default must survive that
                assert round(i.options["default"] / rnd) * rnd == pytest.approx(i.options["default"])


def test_learning_rate_widget_keeps_small_values(pack):
    lr = next(i for i in pack.optimize.VQGANCLIPOptimize.define_schema().inputs if i.id == "lr")
    assert lr.options["min"] <= 1e-4 and lr.options["round"] <= 1e-4


def test_model_folders_registered_without_dropping_user_paths(pack, tmp_path):
    fp = pack.folder_paths
    user_dir = str(tmp_path / "my_vqgans")
    fp.folder_names_and_paths["vqgan"] = ([user_dir], set())  # as if extra_model_paths.yaml ran first
    pack.comfy_adapters.register_model_folders()
    paths, exts = fp.folder_names_and_paths["vqgan"]
    assert paths[0] == user_dir and os.path.join(fp.models_dir, "vqgan") in paths
    assert {".safetensors", ".ckpt"} <= exts
    pack.comfy_adapters.register_model_folders()  # idempotent
    assert fp.folder_names_and_paths["vqgan"][0].count(user_dir) == 1


def test_demo_is_selectable_in_both_loaders(pack):
    vq = next(i for i in pack.loaders.LoadVQGAN.define_schema().inputs if i.id == "vqgan_name")
    clip = next(i for i in pack.loaders.LoadCLIPGuide.define_schema().inputs if i.id == "clip_name")
    assert vq.options["options"][0] == "demo" and vq.options["default"] == "demo"
    assert clip.options["options"][0] == "demo" and clip.options["default"] == "demo"


def test_example_inputs_are_copied_to_input_dir(pack):
    pack.comfy_adapters.install_example_inputs()
    names = os.listdir(pack.folder_paths.get_input_directory())
    assert "vqclip_yellow_triangle.png" in names and "vqclip_white_circle.png" in names


def _all_object_info(pack):
    info = dict(CORE)
    for cls in pack.extension.NODES:
        info[cls.define_schema().node_id] = harness.object_info(cls)
    return info


WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


# Widget order as released. The editor stores widget values by position, so a widget added later must be
# appended to its node's list here (and in the schema), never inserted: saved workflows keep their values.
RELEASED_WIDGETS = {
    "VQGAN_Load": ["vqgan_name"],
    "VQGAN_Seamless": [],
    "VQClip_LoadGuide": ["clip_name", "pretrained"],
    "VQClip_CombineGuides": ["weight_1", "weight_2", "weight_3"],
    "VQGAN_Encode": [],
    "VQGAN_Decode": [],
    "VQGAN_RandomLatent": ["width", "height", "seed", "init", "batch_size"],
    "VQGAN_ResizeLatent": ["scale", "mode"],
    "VQGAN_InterpolateLatents": ["frames", "mode"],
    "VQGAN_LoadFeedForward": ["feed_forward_name"],
    "VQGAN_FeedForwardLatent": ["text", "seed", "batch_size"],
    "VQGAN_SaveLatent": ["filename_prefix"],
    "VQGAN_LoadLatent": ["latent_file"],
    "VQGAN_CodebookLookup": [],
    "VQGAN_CodesToLatent": [],
    "VQGAN_CodebookEdit": ["codes", "pattern", "x", "y", "width", "height", "seed"],
    "VQClip_TextPrompt": ["text", "weight"],
    "VQClip_ImagePrompt": ["weight", "stop"],
    "VQClip_NoisePrompt": ["seed", "weight", "stop"],
    "VQClip_CombineTargets": [],
    "VQClip_RegionTargets": [],
    "VQClip_Score": [],
    "VQGAN_CLIPOptimize": ["steps", "optimizer", "lr", "cutouts", "cutout_method", "augmentations", "seed",
                           "init_weight", "tv_weight", "continue_run", "preview_every", "image_losses", "low_memory",
                           "lr_schedule", "change_prompts_every", "story_fade", "method"],
    "VQGAN_CLIPGenerate": ["prompt", "width", "height", "steps", "optimizer", "lr", "cutouts", "cutout_method",
                           "augmentations", "seed", "preview_every", "low_memory", "lr_schedule",
                           "change_prompts_every", "story_fade", "method"],
    "VQGAN_CLIPZoomAnimation": ["frames", "zoom", "shift_x", "shift_y", "rotate", "padding", "steps_per_frame",
                                "optimizer", "lr", "cutouts", "cutout_method", "augmentations", "seed", "init_weight",
                                "tv_weight", "image_losses", "preview_every", "low_memory", "change_prompts_every", "story_fade", "method"],
    "VQGAN_CLIPRestyleFrames": ["first_steps", "steps_per_frame", "blend", "optimizer", "lr", "cutouts",
                                "cutout_method", "augmentations", "seed", "init_weight", "tv_weight", "image_losses",
                                "preview_every", "low_memory", "smooth", "change_prompts_every", "story_fade", "method"],
    "VQClip_StoryPace": ["change_prompts_every", "story_fade"],
    "VQClip_Loss": ["weight", "cutouts", "cutout_method", "cut_pow", "augmentations", "aug_noise"],
    "VQGAN_TVLoss": ["weight"],
    "VQGAN_ImageLoss": ["name", "weight"],
    "VQGAN_InitImageLoss": ["weight", "decay"],
    "VQGAN_CombineLosses": ["weight_1", "weight_2", "weight_3", "weight_4"],
    "VQGAN_Optimizer": ["optimizer", "lr", "schedule", "schedule_steps"],
    "VQGAN_CLIPOptimizeSteps": ["steps", "seed", "method", "preview_every", "snapshot_every"],
    "VQGAN_StartNewRun": [],
}


def test_new_widgets_come_last_so_saved_workflows_keep_their_values(pack):
    """The released widget order of every node is a prefix of its current order (new widgets appended); a new
    node must be added to RELEASED_WIDGETS."""
    for cls in pack.extension.NODES:
        schema = cls.define_schema()
        widgets = [i.id for i in schema.inputs if i.io_type in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
        assert schema.node_id in RELEASED_WIDGETS, f"add {schema.node_id}: {widgets} to RELEASED_WIDGETS"
        released = RELEASED_WIDGETS[schema.node_id]
        assert widgets[: len(released)] == released, (schema.node_id, widgets)


def test_workflows_exist():
    names = {p.stem for p in WORKFLOWS}
    assert {"text_to_image", "image_prompt_and_text", "init_image_variation", "story", "codebook_edit",
            "seed_batch_ranked", "beginner_generate", "zoom_animation", "restyle_video", "regional_prompts", "inpaint",
            "seamless_texture", "morph", "codebook_sampling"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_matches_node_definitions(pack, path):
    """UI format, every node known, widget values line up with the current schemas, links typed right."""
    wf = json.loads(path.read_text())
    assert {"nodes", "links", "version", "last_node_id", "last_link_id"} <= set(wf)
    info = _all_object_info(pack)
    api = pack.workflow_api.ui_to_api(wf, info)  # raises on unknown nodes / missing widget values
    for node in wf["nodes"]:
        expected = sum(w for _, w in pack.workflow_api.widget_names(info[node["type"]]))
        assert len(node["widgets_values"]) == expected, f"{path.stem} node {node['id']} {node['type']}"
    for link_id, src, slot, dst, dst_slot, typ in wf["links"]:
        src_node = next(n for n in wf["nodes"] if n["id"] == src)
        dst_node = next(n for n in wf["nodes"] if n["id"] == dst)
        assert info[src_node["type"]]["output"][slot] == typ
        dst_input = dst_node["inputs"][dst_slot]
        assert dst_input["link"] == link_id and dst_input["type"] == typ
    for node_id, node in api.items():  # values sit under the right widget: their types match the schema
        spec = {**info[node["class_type"]]["input"].get("required", {}),
                **info[node["class_type"]]["input"].get("optional", {})}
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link, not a widget value
                continue
            kind, opts = spec[name][0], (spec[name][1] if len(spec[name]) > 1 else {})
            where = f"{path.stem} node {node_id}: {name}={value!r}"
            if kind == "BOOLEAN":
                assert isinstance(value, bool), where
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), where
                assert kind == "FLOAT" or float(value).is_integer(), where
                assert opts.get("min", -math.inf) <= value <= opts.get("max", math.inf), where
            elif kind == "STRING":
                assert isinstance(value, str), where
            elif kind == "COMBO" or isinstance(kind, list):  # our combos; core LoadImage lists files here
                options = kind if isinstance(kind, list) else opts.get("options", [])
                assert not options or value in options or node["class_type"] == "LoadImage", where
        if node["class_type"] in ("VQGAN_Load", "VQClip_LoadGuide", "VQGAN_LoadFeedForward"):
            assert "demo" in node["inputs"].values(), f"{path.stem}: node {node_id} must use the demo model"
        if node["class_type"] == "VQGAN_RandomLatent":
            assert node["inputs"]["width"] <= 64 and node["inputs"]["height"] <= 64  # CPU-sized
    assert any(n["class_type"] in ("SaveImage", "PreviewImage", "VQClip_Score", "SaveAnimatedWEBP") for n in api.values())


def test_ui_to_api_handles_seed_control_values(pack):
    info = {"N": {"input": {"required": {"seed": ["INT", {"control_after_generate": True}], "s": ["STRING", {}],
                                         "x": ["IMAGE", {}]}},
                  "input_order": {"required": ["seed", "s", "x"]}, "output": ["IMAGE"]}}
    wf = {"nodes": [{"id": 1, "type": "N", "mode": 0, "widgets_values": [5, "randomize", "hi"],
                     "inputs": [{"name": "x", "link": 1}]},
                    {"id": 2, "type": "N", "mode": 4, "widgets_values": [1, "fixed", "b"], "inputs": []}],
          "links": [[1, 2, 0, 1, 0, "IMAGE"]]}
    api = pack.workflow_api.ui_to_api(wf, info)
    assert api == {"1": {"class_type": "N", "inputs": {"seed": 5, "s": "hi", "x": ["2", 0]}, "_meta": {"title": "N"}}}
    with pytest.raises(ValueError, match="does not know"):
        pack.workflow_api.ui_to_api({"nodes": [{"id": 1, "type": "Nope", "widgets_values": []}], "links": []}, info)


def test_pack_root_imports_without_comfyui():
    """The root __init__ must import as a package with any folder name and expose nothing without ComfyUI."""
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('any_pack_name', {str(REPO / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(REPO)!r}]); "
        "m = importlib.util.module_from_spec(spec); sys.modules['any_pack_name'] = m; spec.loader.exec_module(m); "
        "assert not hasattr(m, 'comfy_entrypoint'); "
        "assert not [k for k in sys.modules if k.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths')]"
    )
    subprocess.run([sys.executable, "-c", code], cwd="/", check=True)


def test_pack_root_exposes_entrypoint_with_comfy_available(tmp_path):
    code = (
        "import asyncio, importlib.util, sys; "
        f"sys.path.insert(0, {harness.STUBS!r}); "
        f"spec = importlib.util.spec_from_file_location('other_name', {str(REPO / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(REPO)!r}]); "
        "m = importlib.util.module_from_spec(spec); sys.modules['other_name'] = m; spec.loader.exec_module(m); "
        "ext = asyncio.run(m.comfy_entrypoint()); nodes = asyncio.run(ext.get_node_list()); "
        "assert len(nodes) >= 16, nodes; "
        "assert 'nodes' not in sys.modules or sys.modules['nodes'].__file__.startswith"
        f"({str(REPO)!r})"
    )
    subprocess.run([sys.executable, "-c", code], cwd="/", check=True, env={**os.environ, "COMFY_STUB_BASE": str(tmp_path)})


def test_every_widget_and_input_has_a_tooltip(pack):
    """A new user hovers a widget to learn what it does: every input of every node says it."""
    missing = [f"{cls.define_schema().node_id}.{i.id}" for cls in pack.extension.NODES
               for i in cls.define_schema().inputs if not (i.tooltip or "").strip()]
    assert not missing, missing


def test_prompt_boxes_explain_the_grammar(pack):
    for cls, name in ((pack.prompts.CLIPTextPrompt, "text"), (pack.optimize.VQGANCLIPGenerate, "prompt")):
        tip = next(i.tooltip for i in cls.define_schema().inputs if i.id == name)
        assert all(s in tip for s in ("weight", "stop", "|", "^")), tip


def test_validation_messages_name_their_widget(pack):
    """ComfyUI 0.3.64 files a node's validate_inputs message under every widget the check reads, so each message
    starts with the widget it is about."""
    opt = pack.optimize.VQGANCLIPOptimize
    assert opt.validate_inputs(augmentations="Af,Zz", image_losses="").startswith("augmentations:")
    assert opt.validate_inputs(augmentations="Af", image_losses="glow:1").startswith("image_losses:")
    gen = pack.optimize.VQGANCLIPGenerate
    assert gen.validate_inputs(prompt="a||", augmentations="Af").startswith("prompt:")
    assert gen.validate_inputs(prompt="a ^ ", augmentations="Af").startswith("prompt:")  # an empty phrase set
    assert gen.validate_inputs(prompt="a", augmentations="Zz").startswith("augmentations:")
    assert pack.losses.CLIPLoss.validate_inputs(augmentations="Zz").startswith("augmentations:")
