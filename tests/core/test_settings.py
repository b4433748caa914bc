"""One source for each setting: the CLI flags and the ComfyUI widgets are made from the config fields' metadata,
and nothing drifts from it (type, default, range, menu, help)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from vqgan_core import AnimationConfig, GenerationConfig, settings_of
from vqgan_core.cli.flags import flag_help
from vqgan_core.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("comfy_stub_harness_settings", REPO / "tests" / "comfy_stubs" / "harness.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CONFIGS = (GenerationConfig, AnimationConfig)

#: (node id, widget) -> the attributes a node sets differently from the field, each for a reason in the node's code
ALLOWED = {
    ("VQGAN_CLIPGenerate", "steps"): {"default", "min"},  # one node makes the whole image; graphs start at 1 step
    ("VQGAN_CLIPOptimize", "steps"): {"min"},
    ("VQGAN_CLIPOptimizeSteps", "steps"): {"min"},
    ("VQGAN_CLIPZoomAnimation", "steps"): {"min"},
    ("VQGAN_CLIPOptimizeSteps", "seed"): {"tooltip"},  # explains how a chained run keeps its random stream
    ("VQClip_StoryPace", "change_prompts_every"): {"default", "min"},  # a pace node exists to switch sets
    ("VQGAN_CLIPZoomAnimation", "padding"): {"default", "options", "tooltip"},  # adds 'auto'
    ("VQGAN_CLIPZoomAnimation", "init_weight"): {"tooltip"},
    ("VQGAN_CLIPRestyleFrames", "init_weight"): {"default", "tooltip"},  # pulls back to each video frame
}
#: widgets that share a setting's name but mean something else
NOT_A_SETTING = {("VQGAN_CodebookEdit", "width"), ("VQGAN_CodebookEdit", "height"),  # a rectangle's size
                 ("VQGAN_CodebookEdit", "seed"),  # which codes a fill draws
                 ("VQGAN_InterpolateLatents", "frames"),  # latents between two ends, not an animation's frames
                 ("VQClip_NoisePrompt", "seed")}  # a noise target's direction


WIDGETS = {"INT", "FLOAT", "STRING", "COMBO", "BOOLEAN"}


def _parser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize(("command", "config"), [("generate", GenerationConfig), ("animate", GenerationConfig),
                                                 ("animate", AnimationConfig)])
def test_every_flag_is_made_from_its_field(command, config):
    actions = {a.dest: a for a in _parser(command)._actions}
    flagged = [s for s in settings_of(config).values() if s.flag]
    assert len(flagged) >= 8
    for s in flagged:
        a = actions.get(s.name)
        assert a is not None, f"--{s.name}: no flag"
        assert s.flag in a.option_strings and set(s.aliases) <= set(a.option_strings)
        assert a.default is None, f"{s.flag}: a flag's default is the field's, applied after stored settings"
        assert a.help == flag_help(s), f"{s.flag}: help drifted from the field"
        if s.choices is not None and not callable(s.choices):
            assert list(a.choices) == s.options(), f"{s.flag}: menu drifted"
        if s.kind in ("int", "float") and "type" not in (s.cli or {}):
            assert a.type is {"int": int, "float": float}[s.kind], f"{s.flag}: type drifted"


def test_flag_help_carries_default_range_and_names():
    s = settings_of(GenerationConfig)
    assert "(1..256)" in flag_help(s["cutn"]) and "(default: 32)" in flag_help(s["cutn"])
    assert "adam" in flag_help(s["optimizer"])  # a registry's names are listed
    assert "Af,Pe,Ji,Er" in flag_help(s["augments"])


def test_the_config_checks_its_declared_ranges():
    for s in settings_of(GenerationConfig).values():
        if s.kind == "int" and s.max is not None:
            with pytest.raises(ValueError, match=f"{s.name} must be between"):
                GenerationConfig(**{s.name: int(s.max) + 1})


def test_given_flags_land_on_their_fields():
    from vqgan_core.cli.flags import given_settings

    args = _parser("generate").parse_args(["x", "--cutn", "5", "--batch", "2", "--cutouts", "crops", "-cpe", "7",
                                           "--no-clamp", "--seamless"])
    assert given_settings(args, GenerationConfig) == {"cutn": 5, "batch_size": 2, "cutout_method": "crops",
                                                      "change_prompts_every": 7, "clamp_latent": False,
                                                      "seamless": True}


@pytest.fixture(scope="module")
def pack():
    ns, saved = harness.load_pack()
    yield ns
    harness.unload_pack(saved)


def _widget_view(s, io_type: str) -> dict:
    """What a widget made from setting ``s`` publishes in /object_info."""
    view = {"tooltip": s.help, "default": s.widget_default}
    if io_type == "COMBO":
        view["options"] = s.options()
    elif io_type in ("INT", "FLOAT"):
        view.update(min=s.min, max=s.max)
    elif io_type == "STRING" and isinstance(view["default"], (list, tuple)):
        view["default"] = ",".join(view["default"])
    return view


def test_every_widget_of_a_setting_matches_its_field(pack):
    by_widget = {}
    for config in CONFIGS:
        for s in settings_of(config).values():
            by_widget.setdefault(s.widget_name, s)
    checked, bad = 0, []
    for cls in pack.extension.NODES:
        schema = cls.define_schema()
        for i in schema.inputs:
            s = by_widget.get(i.id)
            if s is None or (schema.node_id, i.id) in NOT_A_SETTING or i.io_type not in WIDGETS:
                continue
            opts = {**i.options, "tooltip": i.tooltip}
            allowed = ALLOWED.get((schema.node_id, i.id), set())
            for attr, want in _widget_view(s, i.io_type).items():
                if attr not in allowed and opts.get(attr) != want:
                    bad.append(f"{schema.node_id}.{i.id}: {attr} {opts.get(attr)!r} != field's {want!r}")
            checked += 1
    assert checked >= 40, checked
    assert not bad, "\n".join(bad)


def test_widget_names_map_to_fields():
    s = settings_of(GenerationConfig)
    assert (s["cutn"].widget_name, s["augments"].widget_name, s["prompts"].widget_name) == \
        ("cutouts", "augmentations", "prompt")
