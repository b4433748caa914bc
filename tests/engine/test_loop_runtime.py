"""How the generation loop runs: CUDA graphs, compiled blocks, decoder checkpointing, out-of-memory recovery, cuDNN."""

import pytest
import torch

from tests.engine.engine_helpers import _cfg
from vqgan_core import load_vqgan
from vqgan_core.engine.config import GenerationConfig
from vqgan_core.engine.loop import GenerationCallbacks, GenerationLoop, run_generation
from vqgan_core.vqgan.compile_blocks import BLOCK_NAMES
from vqgan_core.vqgan.layers import AttnBlock, ResnetBlock
from vqgan_core.vqgan.recompute import Recomputed

pytestmark = pytest.mark.usefixtures("one_thread")  # vqgan / clip: the tiny models of conftest.py


def test_cuda_graph_needs_cuda(vqgan, clip):
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        GenerationLoop(vqgan, clip, _cfg(cuda_graph=True))
    with pytest.raises(ValueError, match="cannot be combined"):
        GenerationLoop(vqgan, clip, _cfg(cuda_graph=True, deterministic=True))
    with pytest.raises(ValueError, match="cannot capture augmentation.*Ts"):
        GenerationLoop(vqgan, clip, _cfg(cuda_graph=True, augments=["Af", "Ts"]))

    assert GenerationLoop(vqgan, clip, _cfg()).graphed is False  # auto: off on CPU


def test_compile_modes_validated_and_old_flags_read():
    assert _cfg(compile=True).compile == "blocks" and _cfg(compile=False).compile == "off"
    assert GenerationConfig.from_dict({"compile": True}).compile == "blocks"  # PNG metadata of older versions
    with pytest.raises(ValueError, match="valid: off, blocks, full"):
        _cfg(compile="fast")


def test_compile_blocks_compiles_private_copies_only(vqgan, clip):
    loop = GenerationLoop(vqgan, clip, _cfg(compile="blocks"))  # compilation itself is lazy: cheap here
    compiled = [m for m in loop._dec.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(compiled) == sum(isinstance(m, (ResnetBlock, AttnBlock)) for m in vqgan.decoder.modules()) > 0
    assert sum(type(m).__name__ in BLOCK_NAMES and m._compiled_call_impl is not None
               for m in loop._clip_models[0].modules()) == 4  # 2 image (the last one class-token only) + 2 text
    shared = [vqgan, clip.model, *clip.__dict__.get("_lowp", {}).values()]
    assert not any(getattr(m, "_compiled_call_impl", None) is not None for s in shared for m in s.modules())


@pytest.mark.slow
def test_compile_blocks_matches_eager(vqgan, clip):
    eager = run_generation(vqgan, clip, _cfg(steps=3))
    compiled = run_generation(vqgan, clip, _cfg(steps=3, compile="blocks"))
    assert torch.allclose(compiled.latent, eager.latent, atol=1e-3)
    assert abs(compiled.losses[-1][1] - eager.losses[-1][1]) < 1e-3

def test_checkpoint_decoder_gives_the_same_run(vqgan, clip):
    plain = run_generation(vqgan, clip, _cfg(steps=3))
    loop = GenerationLoop(vqgan, clip, _cfg(steps=3, checkpoint_decoder=True))
    wrapped = [m for m in loop._dec.modules() if isinstance(m, Recomputed)]
    assert len(wrapped) == sum(isinstance(m, (ResnetBlock, AttnBlock)) for m in vqgan.decoder.modules()) > 0
    assert not any(isinstance(m, Recomputed) for m in vqgan.modules())  # only the private copy
    r = loop.run()
    assert torch.equal(r.latent, plain.latent) and r.losses == plain.losses  # recomputation is exact



@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_out_of_memory_step_switches_to_checkpointing(vqgan, clip, precision, monkeypatch, caplog):
    """checkpoint_decoder=None: a step that runs out of memory is retried recomputing the decoder, from the
    same random state, so the run equals one checkpointed from the start; False lets the error through."""
    ref = run_generation(vqgan, clip, _cfg(steps=4, precision=precision, checkpoint_decoder=True))
    loop = GenerationLoop(vqgan, clip, _cfg(steps=4, precision=precision))
    real, failed = GenerationLoop._loss, []

    def tight(self, z):  # runs out of memory at step 2 unless the decoder recomputes
        if self.step_index == 2 and not any(isinstance(m, Recomputed) for m in (self._dec or vqgan).modules()):
            failed.append(self.step_index)
            torch.rand(64, generator=self.gen)  # the failed step had drawn its cutouts: the retry must redraw them
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, z)

    monkeypatch.setattr(loop, "_forward", tight.__get__(loop))
    r = loop.run()
    assert failed == [2] and loop._recomputing and "out of GPU memory at step 2" in caplog.text
    assert not any(isinstance(m, Recomputed) for m in vqgan.modules())  # the caller's model is untouched
    assert torch.equal(r.latent, ref.latent) and r.losses == ref.losses
    never = GenerationLoop(vqgan, clip, _cfg(steps=4, precision=precision, checkpoint_decoder=False))
    monkeypatch.setattr(never, "_forward", tight.__get__(never))
    with pytest.raises(torch.OutOfMemoryError):
        never.run()



@pytest.mark.parametrize("persists", [False, True])
def test_out_of_memory_asks_the_host_to_free_memory_first(vqgan, clip, persists, monkeypatch):
    """callbacks.free_memory (ComfyUI unloading its models) is asked once and the step retried as it was;
    only if memory is still short does the decoder start recomputing."""
    ref = run_generation(vqgan, clip, _cfg(steps=4, checkpoint_decoder=persists))
    freed, failed = [], []
    loop = GenerationLoop(vqgan, clip, _cfg(steps=4), GenerationCallbacks(free_memory=lambda: freed.append(1)))
    real = GenerationLoop._loss

    def tight(self, z):
        if self.step_index == 2 and not self._recomputing and (persists or not freed):
            failed.append(self.step_index)
            torch.rand(64, generator=self.gen)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, z)

    monkeypatch.setattr(loop, "_forward", tight.__get__(loop))
    r = loop.run()
    assert freed == [1] and failed == [2] * (1 + persists) and loop._recomputing == persists
    assert torch.equal(r.latent, ref.latent) and r.losses == ref.losses



def test_out_of_memory_inside_a_graph_capture_keeps_the_graph(vqgan, clip, monkeypatch):
    """Ending a capture that ran out of memory raises a RuntimeError of its own: it is still an out-of-memory
    step (switch to checkpointing, capture again), not an op that cannot be captured (give up on graphs)."""
    import vqgan_core.engine.oom as gen_memory

    class FakeGraph:  # GraphedLossBackward's interface, eager, on CPU
        fail = True

        def __init__(self, fn, z, generators):
            self.fn, self.z, self.captures = fn, z, 0

        def scalar(self, name, value):
            return value

        def __call__(self, key):
            if FakeGraph.fail:
                FakeGraph.fail = False
                try:
                    raise torch.OutOfMemoryError("CUDA out of memory")
                except torch.OutOfMemoryError:
                    raise RuntimeError("operation not permitted when stream is capturing") from None
            self.z.grad = None
            loss, img = self.fn()
            loss.backward()
            return loss.detach(), img.detach()

    monkeypatch.setattr(gen_memory, "GraphedLossBackward", FakeGraph)
    loop = GenerationLoop(vqgan, clip, _cfg(steps=2))
    loop._graphed = FakeGraph(loop._graph_body, loop.z, [loop.gen])
    loop.run()
    assert isinstance(loop._graphed, FakeGraph) and loop._recomputing

def test_cudnn_benchmark_is_on_for_cuda_runs_only_and_restored(vqgan, clip, monkeypatch):
    import vqgan_core.engine.loop as gen

    seen = []
    real = gen.run_context

    def spy(mods, deterministic, cudnn_benchmark=False):
        seen.append(cudnn_benchmark)
        return real(mods, deterministic, cudnn_benchmark)

    monkeypatch.setattr(gen, "run_context", spy)
    before = torch.backends.cudnn.benchmark
    assert GenerationLoop(vqgan, clip, _cfg()).cudnn_benchmark is False  # CPU: nothing to time
    during = []
    for wanted in (True, False):
        torch.backends.cudnn.benchmark = not wanted  # whatever the host had: the run's setting wins
        cb = GenerationCallbacks(progress=lambda *a: during.append(torch.backends.cudnn.benchmark))
        GenerationLoop(vqgan, clip, _cfg(steps=1, cudnn_benchmark=wanted), cb).run()
        assert torch.backends.cudnn.benchmark == (not wanted)  # restored after
    torch.backends.cudnn.benchmark = before
    assert seen == [True, False] and during == [True, False]
    assert GenerationLoop(vqgan, clip, _cfg(cudnn_benchmark=True, deterministic=True)).cudnn_benchmark is False
    auto = GenerationLoop(vqgan, clip, _cfg())
    auto.device = torch.device("cuda")  # the default's rule, without a GPU
    assert auto.cudnn_benchmark is True


def test_private_bf16_decoder_keeps_group_norm_parameters_fp32(vqgan, clip):
    loop = GenerationLoop(vqgan, clip, _cfg(precision="bf16", steps=1))
    dtypes = {type(m).__name__: m.weight.dtype for m in loop._dec.modules() if hasattr(m, "weight")}
    assert dtypes["GroupNorm"] == torch.float32 and dtypes["Conv2d"] == torch.bfloat16
    assert loop.render(loop.z).dtype == torch.float32 and torch.isfinite(loop.run().images).all()

def test_a_hosts_reduced_precision_attention_setting_does_not_change_the_image():
    """ComfyUI turns on fp16/bf16 reduction in attention at import (process-wide); a run gives the image it gives
    anywhere else, and the host's setting is back afterwards (the demo VQGAN decodes with attention)."""
    from vqgan_core.clip.guide import load_clip

    vqgan, clip = load_vqgan("demo"), load_clip("demo")
    cfg = _cfg(precision="auto", steps=3, width=64, height=64)
    plain = run_generation(vqgan, clip, cfg)
    torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(True)
    try:
        hosted = run_generation(vqgan, clip, cfg)
        assert torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    finally:
        torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp(False)
    assert torch.equal(plain.images, hosted.images)
