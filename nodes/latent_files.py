"""Save VQ Latent / Load VQ Latent: a run stops in one session and goes on in another.

The file (``vqgan_core.latents.files``) holds the latent, the optimiser state a continued Optimize picks up,
and the VQGAN's codebook shape, so loading it next to a different VQGAN is refused with a clear message.
Saved files go to ComfyUI's output folder; Load lists the input folder and the output folder (``[output]``) and
reads nothing else: ComfyUI does not check the value a client sends against the list, so Load resolves it itself
(``comfy_adapters.find_user_file``: a plain relative name, links resolved, inside one of the two folders) and
refuses anything else with one message, whether or not such a file exists.
"""

from __future__ import annotations

import json
import logging
import os

from comfy_api.latest import io

from . import comfy_adapters as ca
from .types import LATENT_TIP, VQGAN_TIP, Latent, VQGANModel, VQLatent

log = logging.getLogger(__name__)

CATEGORY = "vqgan_clip/latent"


def latent_choices() -> list[str]:
    """``.vqlatent`` files of the input folder, then those of the output folder (annotated ``[output]``)."""
    from ..vqgan_core import SUFFIX

    return ca.user_file_choices(SUFFIX)


def latent_path(latent_file: str) -> str | None:
    """Full path of a listed latent file, or None for anything else (never says whether it exists elsewhere)."""
    from ..vqgan_core import SUFFIX

    return ca.find_user_file(latent_file, SUFFIX)


def refusal(latent_file: str) -> str:
    """The one message for every name that is not a latent file in the input/output folders (existing or not)."""
    from ..vqgan_core import SUFFIX

    return (f"Latent file {latent_file!r} is not available: Load VQ Latent reads only {SUFFIX} files in ComfyUI's "
            f"input folder ('name{SUFFIX}') or output folder ('name{SUFFIX} [output]'), as listed in its menu. "
            "Absolute paths, '..' and links leading out of these folders are refused. Save one with Save VQ Latent "
            "or copy it into the input folder.")


class SaveVQLatent(io.ComfyNode):
    """Write a VQ latent (with its optimiser state) to the output folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: latent + file name prefix; an output node."""
        return io.Schema(
            node_id="VQGAN_SaveLatent",
            display_name="Save VQ Latent",
            category=CATEGORY,
            description="Saves the latent and its optimiser state (.vqlatent in the output folder). Load VQ Latent "
            "with the same VQGAN and a VQGAN+CLIP Optimize with continue_run goes on exactly where this run stopped.",
            inputs=[VQLatent.Input("latent", tooltip=LATENT_TIP), io.String.Input("filename_prefix", default="vqgan_clip/latent",
                                    tooltip="File name under ComfyUI's output folder (a counter and .vqlatent are added).")],
            outputs=[],
            hidden=[io.Hidden.prompt],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, latent: Latent, filename_prefix: str) -> io.NodeOutput:
        """Write ``<prefix>_00001_.vqlatent`` (ComfyUI's numbering); the workflow goes into the metadata."""
        import folder_paths

        from ..vqgan_core import SUFFIX, LatentFile, save_latent

        out_dir = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        file = f"{name}_{counter:05}_{SUFFIX}"
        prompt = getattr(cls.hidden, "prompt", None)
        meta = {"prompt": json.dumps(prompt)} if prompt is not None else None
        save_latent(os.path.join(folder, file), LatentFile.of(latent.z, latent.model, latent.state), meta)
        return io.NodeOutput(ui={"latents": [{"filename": file, "subfolder": subfolder, "type": "output"}]})


class LoadVQLatent(io.ComfyNode):
    """Read a saved VQ latent for this VQGAN."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Schema: VQGAN + file."""
        return io.Schema(
            node_id="VQGAN_LoadLatent",
            display_name="Load VQ Latent",
            category=CATEGORY,
            description="Loads a .vqlatent written by Save VQ Latent (input folder, or output folder marked "
            "[output]) with its optimiser state. Connect the VQGAN it was made with.",
            inputs=[VQGANModel.Input("vqgan", tooltip=VQGAN_TIP), io.Combo.Input("latent_file", options=latent_choices(),
                                   tooltip="A .vqlatent from the input folder, or the output folder (marked [output]).")],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def validate_inputs(cls, latent_file: str) -> bool | str:
        """The file must be a latent file in the input/output folders (ComfyUI shows this message before the run;
        the same text whether or not a file of that name exists outside them)."""
        return True if latent_file is None or latent_path(latent_file) else f"Invalid latent file: {latent_file}"

    @classmethod
    def fingerprint_inputs(cls, latent_file: str, **_: object) -> str:
        """A file saved again under the same name is read again (nothing outside the folders is looked at)."""
        path = latent_path(latent_file)
        st = os.stat(path) if path else None
        return f"{path}:{st.st_mtime_ns}:{st.st_size}" if st else latent_file

    @classmethod
    def execute(cls, vqgan, latent_file: str) -> io.NodeOutput:  # noqa: ANN001
        """Read the file and check it belongs to this VQGAN."""
        from ..vqgan_core import check_model, load_latent

        path = latent_path(latent_file)
        if path is None:
            log.warning("Load VQ Latent refused %r (not a latent file in the input/output folders)", latent_file)
            raise ValueError(refusal(latent_file))
        with ca.outside_inference_mode():  # normal tensors: a continued run updates the optimiser state in place
            f = load_latent(path)
        check_model(f, vqgan, latent_file)
        return io.NodeOutput(Latent(z=f.z.to(ca.output_device()), model=vqgan, state=f.state))
