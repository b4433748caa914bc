"""Stub of comfy_api.latest.ui (only what the pack uses)."""


class PreviewText:
    def __init__(self, value, **kwargs):
        self.value = value

    def as_dict(self):
        return {"text": (self.value,)}


class PreviewImage:
    def __init__(self, image, animated=False, cls=None, **kwargs):
        self.image = image

    def as_dict(self):
        return {"images": [], "animated": (False,)}
