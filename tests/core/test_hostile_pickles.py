"""Standing corpus of what held against an attacker: malicious pickled checkpoints are refused by every entry point
and nothing they carry ever runs (``torch.load(weights_only=True)`` with an explicit allow-list only)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from vqgan_core.cli.main import main

MARK = "vqgan_pwned_marker"


class _System:
    """Unpickling calls os.system (creates the marker file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Eval:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({str(self.path)!r}, 'w').close()",))


def _variants(tmp_path: Path) -> dict[str, Path]:
    """Seven malicious checkpoints: zip and legacy torch formats, plain pickle, nested deep in a state dict, a
    Lightning-looking wrapper, a fake safetensors name, a yaml-less .ckpt."""
    mark = tmp_path / MARK
    out = {}

    def save(name: str, obj: object, legacy: bool = False) -> None:
        p = tmp_path / name
        torch.save(obj, p, _use_new_zipfile_serialization=not legacy)
        out[name] = p

    save("zip_system.ckpt", {"state_dict": {"x": _System(mark)}})
    save("legacy_system.ckpt", {"state_dict": {"x": _System(mark)}}, legacy=True)
    save("zip_eval.ckpt", {"state_dict": {"a": torch.zeros(1)}, "callbacks": [_Eval(mark)]})
    save("nested.ckpt", {"state_dict": {"encoder.conv_in.weight": torch.zeros(1), "deep": {"er": [(_System(mark),)]}}})
    save("lightning_like.ckpt", {"pytorch-lightning_version": "1.0.8", "state_dict": {}, "hparams": _Eval(mark)})
    plain = tmp_path / "plain_pickle.ckpt"
    plain.write_bytes(pickle.dumps({"state_dict": _System(mark)}))
    out["plain_pickle.ckpt"] = plain
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(pickle.dumps(_System(mark)))
    out["fake.safetensors"] = fake
    return out


@pytest.mark.parametrize("entry", ["load_vqgan", "cli_info", "cli_convert", "cli_generate", "training_init"])
def test_malicious_checkpoints_are_refused_everywhere_and_never_run(tmp_path, capsys, entry):
    from vqgan_core import load_vqgan

    files = _variants(tmp_path)
    assert len(files) == 7
    for name, path in files.items():
        if entry == "load_vqgan":
            with pytest.raises(Exception) as e:  # noqa: PT011 - any clear error; the point is that nothing ran
                load_vqgan(str(path))
            assert type(e.value).__module__.startswith("vqgan_core") or isinstance(e.value, ValueError), name
        elif entry == "cli_info":
            assert main(["info", str(path)]) == 2, name
        elif entry == "cli_convert":
            assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2, name
            assert not (tmp_path / "out.safetensors").exists()
        elif entry == "cli_generate":
            assert main(["generate", "red", "--vqgan", str(path), "--steps", "1", "--out", str(tmp_path / "x.png"),
                         "--no-progress", "--device", "cpu"]) == 2, name
        else:
            from PIL import Image

            from training.cli import main as train_main

            data = tmp_path / "images"
            if not data.is_dir():  # a real (tiny) image folder, so the run gets as far as its start point
                data.mkdir()
                for k in range(4):
                    Image.new("RGB", (64, 64), (60 * k, 20, 200)).save(data / f"{k}.png")
            cfg = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny_cpu.yaml"
            rc = train_main(["--config", str(cfg), "--data", str(data), "--out", str(tmp_path / f"run_{name}"),
                             f"init.from_checkpoint={path}"])
            assert rc != 0, name
            assert str(path) in capsys.readouterr().err, name  # refused because of the file, naming it
        assert not (tmp_path / MARK).exists(), f"{name} ran its pickled code via {entry}"
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights_only=False" not in err
