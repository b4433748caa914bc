"""Save VQ Latent / Load VQ Latent: a run stops in one session and goes on in another.

The file (``vqgan_core.latent_io``) holds the latent, the optimiser state a continued Optimize picks up,
and the VQGAN's codebook shape, so loading it next to a different VQGAN is refused with a clear message.
Saved files go to ComfyUI's output folder; Load lists the input folder and the output folder (``[output]``).
"""

from __future__ import annotations

import json
import os

from comfy_api.latest import io

from . import comfy_adapters as ca
from .types import Latent, VQGANModel, VQLatent

CATEGORY = "vqgan_clip/latent"


def latent_choices() -> list[str]:
    """``.vqlatent`` files of the input folder, then those of the output folder (annotated ``[output]``)."""
    import folder_paths

    from vqgan_core.latent_io import SUFFIX

    found = []
    for base, tag in ((folder_paths.get_input_directory(), ""), (folder_paths.get_output_directory(), " [output]")):
        for root, _dirs, files in os.walk(base):
            found += [os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/") + tag
                      for f in sorted(files) if f.endswith(SUFFIX)]
    return found


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
            inputs=[VQLatent.Input("latent"), io.String.Input("filename_prefix", default="vqgan_clip/latent")],
            outputs=[],
            hidden=[io.Hidden.prompt],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, latent: Latent, filename_prefix: str) -> io.NodeOutput:
        """Write ``<prefix>_00001_.vqlatent`` (ComfyUI's numbering); the workflow goes into the metadata."""
        import folder_paths

        from vqgan_core.latent_io import SUFFIX, LatentFile, save_latent

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
            inputs=[VQGANModel.Input("vqgan"), io.Combo.Input("latent_file", options=latent_choices())],
            outputs=[VQLatent.Output(display_name="latent")],
        )

    @classmethod
    def validate_inputs(cls, latent_file: str) -> bool | str:
        """The file must exist (ComfyUI shows this message before the run)."""
        import folder_paths

        return True if folder_paths.exists_annotated_filepath(latent_file) else f"Invalid latent file: {latent_file}"

    @classmethod
    def fingerprint_inputs(cls, latent_file: str, **_: object) -> str:
        """A file saved again under the same name is read again."""
        import folder_paths

        path = folder_paths.get_annotated_filepath(latent_file)
        st = os.stat(path) if os.path.exists(path) else None
        return f"{path}:{st.st_mtime_ns}:{st.st_size}" if st else path

    @classmethod
    def execute(cls, vqgan, latent_file: str) -> io.NodeOutput:  # noqa: ANN001
        """Read the file and check it belongs to this VQGAN."""
        import folder_paths

        from vqgan_core.latent_io import check_model, load_latent

        with ca.outside_inference_mode():  # normal tensors: a continued run updates the optimiser state in place
            f = load_latent(folder_paths.get_annotated_filepath(latent_file))
        check_model(f, vqgan, latent_file)
        return io.NodeOutput(Latent(z=f.z.to(ca.output_device()), model=vqgan, state=f.state))
