"""The pack inside a real ComfyUI server: loads, registers its nodes, and runs every shipped workflow.

Skipped unless ``COMFYUI_DIR`` points at a ComfyUI checkout (Comfy-Org/ComfyUI) whose Python has
ComfyUI's requirements plus this pack's (``COMFYUI_PYTHON``, default ``$COMFYUI_DIR/.venv/bin/python``).
Marked ``comfyui`` (deselected by default)::

    COMFYUI_DIR=/path/to/ComfyUI pytest -m comfyui tests/nodes/test_comfyui_real.py -s

The server runs on CPU on a free loopback port with a temporary ``--base-directory`` whose
``custom_nodes`` holds only a link to this repository, plus an ``extra_model_paths.yaml`` adding a
user ``vqgan`` folder (to check the pack keeps such entries). Each workflow is converted to API format
with the server's /object_info (``nodes.workflow_api``), queued, and must finish with its images on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from nodes.workflow_api import ui_to_api  # noqa: E402  (pure Python, no ComfyUI import)
from tests.nodes.comfyui_server import COMFYUI_DIR, MiniWebSocket, Server  # noqa: E402

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run the real-server tests"),
]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
OUR_NODES = {"VQGAN_Load", "VQClip_LoadGuide", "VQClip_CombineGuides", "VQGAN_Encode", "VQGAN_Decode",
             "VQGAN_RandomLatent", "VQGAN_ResizeLatent", "VQGAN_CodebookLookup", "VQGAN_CodesToLatent",
             "VQGAN_CodebookEdit", "VQClip_TextPrompt", "VQClip_ImagePrompt", "VQClip_CombineTargets",
             "VQClip_Score", "VQGAN_CLIPOptimize", "VQGAN_CLIPGenerate", "VQGAN_CLIPZoomAnimation",
             "VQGAN_CLIPRestyleFrames", "VQClip_RegionTargets", "VQGAN_Seamless", "VQClip_NoisePrompt",
             "VQGAN_InterpolateLatents", "VQGAN_SaveLatent", "VQGAN_LoadLatent", "VQClip_Loss", "VQGAN_TVLoss",
             "VQGAN_ImageLoss", "VQGAN_InitImageLoss", "VQGAN_CombineLosses", "VQClip_StoryPace", "VQGAN_Optimizer",
             "VQGAN_CLIPOptimizeSteps", "VQGAN_StartNewRun", "VQGAN_LoadFeedForward", "VQGAN_FeedForwardLatent"}
TAMING = Path(os.environ.get("TAMING_FIXTURES", REPO / "tests" / "fixtures" / "taming"))
TAMING_MISSING = (f"taming fixtures not found at {TAMING} (they ship in tests/fixtures/taming; regenerate them with "
                  "`python tests/fixtures/make_taming_fixtures.py --taming PATH_TO_TAMING_CHECKOUT`)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "vqgan_clip_under_test").symlink_to(REPO, target_is_directory=True)
    user_models = base / "user_vqgans"
    user_models.mkdir()
    from vqgan_core.hub import demo

    shutil.copyfile(demo.vqgan_path(), user_models / "my_user_vqgan.safetensors")
    if not (TAMING / "tiny_f4" / "last.ckpt").is_file():
        pytest.fail(TAMING_MISSING, pytrace=False)
    # a real taming .ckpt + .yaml pair (tiny, random weights) for the .ckpt path
    shutil.copyfile(TAMING / "tiny_f4" / "last.ckpt", user_models / "taming_tiny_f4.ckpt")
    shutil.copyfile(TAMING / "tiny_f4" / "model.yaml", user_models / "taming_tiny_f4.yaml")
    extra = base / "extra_model_paths.yaml"
    extra.write_text(f"vqclip_user:\n    vqgan: {user_models}\n")
    srv = Server(base)
    srv.boot_seconds = srv.start(extra)
    srv.object_info = srv.get("/object_info")
    srv.timings = {}
    yield srv
    srv.stop()
    print(f"\nComfyUI boot {srv.boot_seconds:.1f}s; workflow run times (s): "  # noqa: T201
          + json.dumps({k: round(v, 1) for k, v in srv.timings.items()}))


def test_pack_imports_without_errors(server):
    log = server.log_text()
    assert "vqgan_clip_under_test" in log
    for bad in ("IMPORT FAILED", "Error while calling comfy_entrypoint", "Cannot import"):
        offending = [line for line in log.splitlines() if bad in line and "vqgan_clip_under_test" in line]
        assert not offending, offending
    assert "Error while calling comfy_entrypoint" not in log


def test_nodes_registered_with_demo_and_user_models(server):
    info = server.object_info
    assert OUR_NODES <= set(info), OUR_NODES - set(info)
    vq = info["VQGAN_Load"]["input"]["required"]["vqgan_name"]
    options = vq[1]["options"] if vq[0] == "COMBO" else vq[0]
    assert options[0] == "demo" and "my_user_vqgan.safetensors" in options  # extra_model_paths.yaml kept
    clip = info["VQClip_LoadGuide"]["input"]["required"]["clip_name"]
    assert "demo" in (clip[1]["options"] if clip[0] == "COMBO" else clip[0])
    assert (server.base / "input" / "vqclip_yellow_triangle.png").is_file()  # example inputs installed


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs(server, path):
    prompt = ui_to_api(json.loads(path.read_text()), server.object_info)
    hist, seconds = server.run_prompt(prompt)
    server.timings[path.stem] = seconds
    status = hist["status"]
    assert status["status_str"] == "success", json.dumps(status["messages"])[-3000:]
    saves = [nid for nid, n in prompt.items() if n["class_type"] in ("SaveImage", "PreviewImage", "SaveAnimatedWEBP")]
    assert saves
    for nid in saves:
        images = hist["outputs"][nid]["images"]
        assert images, f"node {nid} produced no image"
        for im in images:
            path = server.base / im["type"] / im["subfolder"] / im["filename"]
            assert path.stat().st_size > 0
            if prompt[nid]["class_type"] == "SaveAnimatedWEBP":
                from PIL import Image

                counted = [n for n in prompt.values()
                           if n["class_type"] in ("VQGAN_CLIPZoomAnimation", "VQGAN_InterpolateLatents")]
                expected = counted[0]["inputs"]["frames"] if counted else 8  # restyle: the 8-frame example input
                with Image.open(path) as anim:
                    assert anim.n_frames == expected
    scores = [nid for nid, n in prompt.items() if n["class_type"] == "VQClip_Score"]
    for nid in scores:
        assert hist["outputs"][nid]["text"][0].startswith("#1: image")


def test_taming_ckpt_loads_and_round_trips(server):
    """Load VQGAN on a taming .ckpt with its .yaml (weights-only unpickling inside ComfyUI), encode, decode."""
    prompt = {
        "1": {"class_type": "VQGAN_Load", "inputs": {"vqgan_name": "taming_tiny_f4.ckpt"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "vqclip_white_circle.png"}},
        "3": {"class_type": "VQGAN_Encode", "inputs": {"vqgan": ["1", 0], "image": ["2", 0]}},
        "4": {"class_type": "VQGAN_Decode", "inputs": {"latent": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "vqclip/taming"}},
    }
    hist, _ = server.run_prompt(prompt)
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"]["messages"])[-3000:]
    assert hist["outputs"]["5"]["images"]


def test_feed_forward_next_to_another_vqgan_is_a_node_error(server):
    """The demo feed-forward model with the taming VQGAN: the run stops at Feed-Forward Text to Latent with the
    core's message naming the VQGAN it was trained for; a name outside its folder is refused when queued."""
    prompt = ui_to_api(json.loads((REPO / "workflows" / "feed_forward_demo.json").read_text()), server.object_info)
    loader = next(n for n in prompt.values() if n["class_type"] == "VQGAN_Load")
    loader["inputs"]["vqgan_name"] = "taming_tiny_f4.ckpt"
    hist, _ = server.run_prompt(prompt)
    assert hist["status"]["status_str"] == "error"
    err = next(m[1] for m in hist["status"]["messages"] if m[0] == "execution_error")
    assert err["node_type"] == "VQGAN_FeedForwardLatent" and err["exception_type"] == "ValueError"
    assert "trained for VQGAN demo" in err["exception_message"]
    ff = next(n for n in prompt.values() if n["class_type"] == "VQGAN_LoadFeedForward")
    ff["inputs"]["feed_forward_name"] = "../vqgan/my_user_vqgan.safetensors"
    status, resp = server.post("/prompt", {"prompt": prompt})
    assert status == 400 and "was not found in models/vqgan_feed_forward" in json.dumps(resp["node_errors"])


def test_save_then_load_a_vq_latent_in_a_later_prompt(server):
    """Save VQ Latent writes into output/; a later prompt's Load VQ Latent lists it ([output]) and decodes it."""
    gen = {"class_type": "VQGAN_CLIPGenerate", "inputs": {
        "vqgan": ["1", 0], "clip_guide": ["2", 0], "prompt": "a red circle on a blue background", "width": 64,
        "height": 64, "steps": 3, "optimizer": "adam", "lr": 0.1, "cutouts": 4, "cutout_method": "latest",
        "augmentations": "Af", "seed": 77, "preview_every": 0, "low_memory": False, "lr_schedule": "constant",
        "change_prompts_every": 0, "story_fade": 0}}
    models = {"1": {"class_type": "VQGAN_Load", "inputs": {"vqgan_name": "demo"}},
              "2": {"class_type": "VQClip_LoadGuide", "inputs": {"clip_name": "demo", "pretrained": "none"}}}
    save = {"class_type": "VQGAN_SaveLatent", "inputs": {"latent": ["3", 1], "filename_prefix": "vqclip/resume"}}
    hist, _ = server.run_prompt({**models, "3": gen, "4": save})
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"]["messages"])[-3000:]
    saved = hist["outputs"]["4"]["latents"][0]
    assert (server.base / "output" / saved["subfolder"] / saved["filename"]).is_file()
    load = {"class_type": "VQGAN_LoadLatent",
            "inputs": {"vqgan": ["1", 0], "latent_file": f"{saved['subfolder']}/{saved['filename']} [output]"}}
    decode = {"class_type": "VQGAN_Decode", "inputs": {"latent": ["3", 0]}}
    image = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "vqclip/resumed"}}
    hist, _ = server.run_prompt({**models, "3": load, "4": decode, "5": image})
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"]["messages"])[-3000:]
    assert hist["outputs"]["5"]["images"]


def test_progress_and_jpeg_previews_reach_the_client(server):
    """Optimize sends a progress event per step and a JPEG preview every preview_every steps."""
    prompt = ui_to_api(json.loads((REPO / "workflows" / "text_to_image.json").read_text()), server.object_info)
    opt_id, opt = next((k, n) for k, n in prompt.items() if n["class_type"] == "VQGAN_CLIPOptimize")
    opt["inputs"].update(steps=12, preview_every=4, seed=4242)  # a new seed: not served from the cache
    ws = MiniWebSocket(server.port, "vqclip-ws-test")
    try:
        status, resp = server.post("/prompt", {"prompt": prompt, "client_id": "vqclip-ws-test"})
        assert status == 200 and resp["node_errors"] == {}
        progress, previews, done = [], 0, False
        while not done:
            opcode, data = ws.recv()
            if opcode == 2 and b"\xff\xd8\xff" in data[:64]:
                previews += 1
            elif opcode == 1:
                msg = json.loads(data)
                d = msg.get("data", {})
                if msg["type"] == "progress" and d.get("node") == opt_id:
                    progress.append(d["value"])
                done = msg["type"] in ("execution_success", "execution_error") and d.get("prompt_id") == resp["prompt_id"]
    finally:
        ws.close()
    assert progress == list(range(1, 13)), progress
    assert previews >= 3, previews  # steps 0, 4, 8 (a decode node's own previews may add more)


def test_validation_errors_are_in_user_words(server):
    prompt = ui_to_api(json.loads((REPO / "workflows" / "text_to_image.json").read_text()), server.object_info)
    opt = next(n for n in prompt.values() if n["class_type"] == "VQGAN_CLIPOptimize")
    opt["inputs"]["augmentations"] = "Af,Zz"
    text = next(n for n in prompt.values() if n["class_type"] == "VQClip_TextPrompt")
    text["inputs"]["text"] = "a red circle||"
    status, resp = server.post("/prompt", {"prompt": prompt})
    assert status == 400
    messages = json.dumps(resp["node_errors"])
    assert "Unknown augmentation in 'Af,Zz'" in messages and "Prompt not understood" in messages


def test_interrupt_stops_a_long_optimize(server):
    prompt = ui_to_api(json.loads((REPO / "workflows" / "text_to_image.json").read_text()), server.object_info)
    opt = next(n for n in prompt.values() if n["class_type"] == "VQGAN_CLIPOptimize")
    opt["inputs"].update(steps=5000, seed=12345)
    status, resp = server.post("/prompt", {"prompt": prompt})
    assert status == 200 and resp["node_errors"] == {}
    pid = resp["prompt_id"]
    t0 = time.monotonic()
    while not server.get("/queue")["queue_running"] and time.monotonic() - t0 < 60:
        time.sleep(0.2)
    time.sleep(3)  # let it reach the optimisation loop
    server.post("/interrupt", {})
    while pid not in server.get(f"/history/{pid}") and time.monotonic() - t0 < 120:
        time.sleep(0.5)
    status = server.get(f"/history/{pid}")[pid]["status"]
    assert status["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in status["messages"])
    assert time.monotonic() - t0 < 60  # 5000 steps would take minutes


def _blocks_prompt(chain: list[int], seed: int) -> dict:
    """Demo models -> CLIP Loss + TV -> Optimize Steps chained ``chain`` times -> Save Image."""
    p = {"1": {"class_type": "VQGAN_Load", "inputs": {"vqgan_name": "demo"}},
         "2": {"class_type": "VQClip_LoadGuide", "inputs": {"clip_name": "demo", "pretrained": "none"}},
         "3": {"class_type": "VQClip_TextPrompt", "inputs": {"text": "a red circle on a blue background", "weight": 1.0}},
         "4": {"class_type": "VQClip_Loss", "inputs": {"clip_guide": ["2", 0], "targets": ["3", 0], "weight": 1.0,
                                                        "cutouts": 8, "cutout_method": "latest", "cut_pow": 1.0,
                                                        "augmentations": "Af,Pe,Ji,Er", "aug_noise": 0.1}},
         "5": {"class_type": "VQGAN_TVLoss", "inputs": {"weight": 0.1}},
         "6": {"class_type": "VQGAN_CombineLosses", "inputs": {"loss_1": ["4", 0], "loss_2": ["5", 0], "weight_1": 1.0,
                                                                "weight_2": 1.0, "weight_3": 1.0, "weight_4": 1.0}},
         "7": {"class_type": "VQGAN_Optimizer", "inputs": {"optimizer": "adam", "lr": 0.1, "schedule": "cosine",
                                                           "schedule_steps": sum(chain)}},
         "8": {"class_type": "VQGAN_RandomLatent", "inputs": {"vqgan": ["1", 0], "width": 64, "height": 64,
                                                              "seed": seed, "init": "random", "batch_size": 1}}}
    src = ["8", 0]
    for k, n in enumerate(chain):
        nid = str(10 + k)
        p[nid] = {"class_type": "VQGAN_CLIPOptimizeSteps", "inputs": {
            "vqgan": ["1", 0], "latent": src, "loss": ["6", 0], "optimizer": ["7", 0], "steps": n,
            "seed": seed + 1000 * k, "method": "z_quantize", "preview_every": 0}}
        src = [nid, 0]
    p["30"] = {"class_type": "VQGAN_Decode", "inputs": {"latent": src}}
    p["31"] = {"class_type": "SaveImage", "inputs": {"images": ["30", 0], "filename_prefix": f"vqclip/chain{len(chain)}"}}
    return p


def test_chained_step_nodes_equal_one_node_in_comfyui(server):
    """Three chained Optimize Steps of 4 steps give the image of one node of 12 steps, pixel for pixel."""
    import numpy as np
    from PIL import Image

    images = []
    for chain in ([12], [4, 4, 4]):
        hist, _ = server.run_prompt(_blocks_prompt(chain, seed=31))
        assert hist["status"]["status_str"] == "success", json.dumps(hist["status"]["messages"])[-3000:]
        im = hist["outputs"]["31"]["images"][0]
        with Image.open(server.base / im["type"] / im["subfolder"] / im["filename"]) as f:
            images.append(np.asarray(f.convert("RGB")))
    assert images[0].std() > 1  # a picture, not a flat image
    assert np.array_equal(images[0], images[1])


def test_step_node_shows_its_loss_under_the_node(server):
    """The loss goes out as progress text for the running node (ComfyUI's binary TEXT event)."""
    prompt = _blocks_prompt([6], seed=4343)
    ws = MiniWebSocket(server.port, "vqclip-ws-loss")
    texts = []
    try:
        status, resp = server.post("/prompt", {"prompt": prompt, "client_id": "vqclip-ws-loss"})
        assert status == 200 and resp["node_errors"] == {}
        done = False
        while not done:
            opcode, data = ws.recv()
            if opcode == 2 and data[:4] == (3).to_bytes(4, "big"):  # BinaryEventTypes.TEXT
                n = int.from_bytes(data[4:8], "big")
                texts.append((data[8:8 + n].decode(), data[8 + n:].decode()))
            elif opcode == 1:
                msg = json.loads(data)
                done = msg["type"] in ("execution_success", "execution_error") and \
                    msg.get("data", {}).get("prompt_id") == resp["prompt_id"]
    finally:
        ws.close()
    assert texts and all(node == "10" for node, _ in texts), texts
    assert any("loss" in t for _, t in texts) and texts[-1][1].startswith("done: 6 steps"), texts
