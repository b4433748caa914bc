"""Stub of comfy.utils.ProgressBar that records every update."""

UPDATES: list[tuple[int, int, object]] = []


class ProgressBar:
    """Records (value, total, preview) in UPDATES."""

    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        UPDATES.append((self.current, self.total, preview))

    def update(self, value):
        self.update_absolute(self.current + value)
