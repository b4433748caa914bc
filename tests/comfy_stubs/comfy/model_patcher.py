"""Stub of comfy.model_patcher: a ModelPatcher that records its model, devices and callbacks."""


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        self.callbacks = {}

    def add_callback(self, call_type, callback):
        self.callbacks.setdefault(call_type, []).append(callback)

    def detach(self, unpatch_all=True):
        """What ComfyUI does when it unloads the model: move it to the offload device, run ON_DETACH."""
        self.model.to(self.offload_device)
        for cb in self.callbacks.get("on_detach_after", []):
            cb(self, unpatch_all)
        return self.model
