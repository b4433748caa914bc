"""Bad input gets a clear error naming the file, key or shape and what was expected."""

from __future__ import annotations

import shutil
import zipfile

import pytest
import torch
import yaml

from vqgan_core import CheckpointError, load_vqgan
from vqgan_core.hub.checkpoint import safe_torch_load


@pytest.fixture
def f4(taming_fixtures, tmp_path):
    d = tmp_path / "f4"
    shutil.copytree(taming_fixtures / "tiny_f4", d)
    return d


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.ckpt"
    p.write_text("this is a text file, not weights")
    with pytest.raises(CheckpointError, match=r"notes\.ckpt.*not a readable PyTorch checkpoint"):
        load_vqgan(p, config=tmp_path / "x.yaml")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.safetensors is empty"):
        load_vqgan(p)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_vqgan(tmp_path / "nope.ckpt")


def test_truncated_ckpt(f4):
    data = (f4 / "last.ckpt").read_bytes()
    (f4 / "last.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.ckpt.*(damaged|truncated)"):
        load_vqgan(f4 / "last.ckpt")


def test_truncated_safetensors(f4, tmp_path):
    from safetensors.torch import save

    data = save(torch.load(f4 / "last.ckpt", weights_only=True)["state_dict"], {"format": "pt"})
    p = tmp_path / "cut.safetensors"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors is not a valid safetensors file"):
        load_vqgan(p, config=f4 / "model.yaml")


def test_missing_keys(f4, tmp_path):
    sd = torch.load(f4 / "last.ckpt", weights_only=True)["state_dict"]
    del sd["decoder.conv_out.weight"]
    p = tmp_path / "missing.ckpt"
    torch.save({"state_dict": sd}, p)
    with pytest.raises(CheckpointError, match=r"missing\.ckpt.*1 missing keys.*decoder\.conv_out\.weight"):
        load_vqgan(p, config=f4 / "model.yaml")


def test_unexpected_keys(f4, tmp_path):
    sd = torch.load(f4 / "last.ckpt", weights_only=True)["state_dict"]
    sd["decoder.extra_head.weight"] = torch.zeros(3)
    p = tmp_path / "extra.ckpt"
    torch.save({"state_dict": sd}, p)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*decoder\.extra_head\.weight"):
        load_vqgan(p, config=f4 / "model.yaml")
    torch.save({"state_dict": sd}, f4 / "last.ckpt")  # the yaml beside it has the right architecture: no fallback
    with pytest.raises(CheckpointError, match=r"unexpected keys.*decoder\.extra_head\.weight"):
        load_vqgan(f4 / "last.ckpt")


def test_yaml_does_not_match_weights(f4, caplog):
    """A yaml given explicitly must fit (both architectures are named); one merely found beside the checkpoint
    (a shared model.yaml, another model's) gives way to the weights, loudly."""
    doc = yaml.safe_load((f4 / "model.yaml").read_text())
    doc["model"]["params"]["n_embed"] = 1024
    (f4 / "other.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(CheckpointError, match=r"quantize\.embedding\.weight.*shape \[64, 16\].*expects \[1024, 16\].*"
                       r"The weights themselves are a f4 VQ VQGAN, 64 codes x 16.*the config says a f4 VQ VQGAN, 1024 "
                       r"codes x 16.*without one the architecture is read from the weights"):
        load_vqgan(f4 / "last.ckpt", config=f4 / "other.yaml")
    (f4 / "other.yaml").replace(f4 / "model.yaml")
    with caplog.at_level("WARNING"):
        m = load_vqgan(f4 / "last.ckpt")
    assert m.config.n_embed == 64 and m.config.extra["config_source"] == "inferred from the weights"
    assert "model.yaml) is another model's" in caplog.text and "assuming taming's 32 GroupNorm groups" in caplog.text


def test_saved_error_page_as_yaml_gives_way_to_the_weights(f4, caplog):
    (f4 / "model.yaml").write_text("<!DOCTYPE html><html><body>Link does not exist</body></html>")
    with caplog.at_level("WARNING"):
        m = load_vqgan(f4 / "last.ckpt")
    assert m.config.n_embed == 64 and "is a web page" in caplog.text
    with pytest.raises(CheckpointError, match="is a web page"):  # given explicitly, it is an error
        load_vqgan(f4 / "last.ckpt", config=f4 / "model.yaml")


def test_ckpt_without_yaml_is_read_from_its_weights(f4, taming_fixtures, tmp_path):
    (f4 / "model.yaml").unlink()
    lonely, ref = load_vqgan(f4 / "last.ckpt"), load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt")
    assert lonely.config.extra["config_source"] == "inferred from the weights"
    z = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lonely.decode(z), ref.decode(z))
    sd = torch.load(f4 / "last.ckpt", weights_only=True)["state_dict"]
    p = tmp_path / "decoder_only.ckpt"  # no encoder: its widths cannot be read
    torch.save({"state_dict": {k: v for k, v in sd.items() if not k.startswith("encoder.")}}, p)
    with pytest.raises(CheckpointError, match=r"no config found for .*decoder_only\.ckpt.*no taming encoder keys.*--config"):
        load_vqgan(p)


def test_yaml_with_unknown_target(f4):
    doc = yaml.safe_load((f4 / "model.yaml").read_text())
    doc["model"]["target"] = "taming.models.vqgan.EMAVQ"
    (f4 / "model.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(CheckpointError, match=r"EMAVQ.*supported"):
        load_vqgan(f4 / "last.ckpt")


def test_image_size_not_multiple_of_factor(taming_fixtures):
    model = load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt")
    with pytest.raises(ValueError, match=r"height 30 is not a multiple of the downsampling factor 4; use 28 or 32"):
        model.encode(torch.zeros(1, 3, 30, 32))


def test_out_of_range_indices(taming_fixtures):
    model = load_vqgan(taming_fixtures / "tiny_f4" / "last.ckpt")
    with pytest.raises(ValueError, match=r"\[0, 63\]"):
        model.decode_indices(torch.full((1, 2, 2), 64))


class _Evil:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-path-for-test",))


def test_pickled_code_is_never_executed(tmp_path):
    """A checkpoint carrying an arbitrary callable is refused before unpickling, naming the global."""
    p = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match=r"shutil\.rmtree"):
        safe_torch_load(p)


def test_lightning_globals_are_aliased_not_imported(taming_fixtures):
    ckpt = safe_torch_load(taming_fixtures / "tiny_f4_train" / "last_pl_legacy.ckpt")
    (key,) = ckpt["callbacks"].keys()
    assert key.__name__ == "ModelCheckpoint" and key.__module__.startswith("vqgan_core")
    assert zipfile.is_zipfile(taming_fixtures / "tiny_f4_train" / "last_pl_legacy.ckpt")


def test_malformed_shapes_give_a_config_error_not_a_traceback(f4, tmp_path):
    sd = torch.load(f4 / "last.ckpt", weights_only=True)["state_dict"]
    sd["decoder.conv_in.weight"] = torch.zeros(7)  # 1-D where a conv weight belongs
    p = tmp_path / "odd.ckpt"
    torch.save({"state_dict": sd}, p)
    with pytest.raises(CheckpointError, match=r"no config found for .*odd\.ckpt.*unexpected shape"):
        load_vqgan(p)
