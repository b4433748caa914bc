"""Stub of comfy.model_patcher: a ModelPatcher that records its model, devices and how much of it is loaded."""


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        self.loaded, self.partial_loads = 0, []

    def model_size(self):
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def loaded_size(self):
        return self.loaded

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        self.partial_loads.append(extra_memory)
        self.loaded = min(self.model_size(), self.loaded + extra_memory)
        return self.loaded
