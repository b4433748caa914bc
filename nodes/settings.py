"""Widgets made from the core's declared settings (``vqgan_core.util.settings``): a widget that sets a
``GenerationConfig`` / ``AnimationConfig`` field takes its default, range, menu and tooltip from the field, so the
graph, the command line and the library cannot drift apart (``tests/core/test_settings.py`` checks it).

Keyword overrides are for what a graph needs differently (a seed widget's ``control_after_generate``, a menu with an
extra ``auto`` entry); the drift test lists each one it allows.
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ..vqgan_core import settings_of


def setting_input(config: type, name: str, *, widget: str | None = None, **override: Any) -> io.Input:
    """The widget of setting ``name`` of ``config``, saved under the setting's ``widget`` name (or ``widget``: a
    node whose saved workflows named it differently)."""
    s = settings_of(config)[name]
    kw: dict[str, Any] = {"default": s.widget_default, "tooltip": s.help}
    if s.kind == "bool":
        cls: Any = io.Boolean.Input
    elif s.choices is not None and s.kind == "str":
        cls, kw["options"] = io.Combo.Input, s.options()
    elif s.kind in ("int", "float"):
        if s.kind == "int":
            cls = io.Int.Input
            kw.update(min=int(s.min), max=int(s.max), step=int(s.step or 1))
        else:
            cls = io.Float.Input
            kw.update(min=s.min, max=s.max, step=s.step or 1, round=(s.step or 0.01) / 10)
    else:  # text: lists as comma-separated codes, "no value" as an empty box
        cls = io.String.Input
        d = kw["default"]
        kw["default"] = ",".join(d) if isinstance(d, (list, tuple)) else ("" if d is None else str(d))
    kw.update(override)
    return cls(widget or s.widget_name, **kw)
