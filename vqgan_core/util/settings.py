"""Settings declared once: a config dataclass field carries its help, range, choices and its names elsewhere.

The command-line flags (``vqgan_core.cli.flags``) and the ComfyUI widgets (``nodes.comfy_adapters.setting_input``)
are generated from this metadata, and the config checks its own ranges and choices with it, so a default, a range
or a help text lives in one place; ``tests/core/test_settings.py`` fails when a flag or a widget drifts from its
field.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

__all__ = ["Setting", "check_settings", "format_number", "reject_unknown_keys", "setting", "settings_of"]

_KEY = "vqgan_core.setting"
_UNSET: Any = type("Unset", (), {"__repr__": lambda self: "<unset>"})()  # "no widget default of its own"
Choices = Sequence[str] | Callable[[], Sequence[str]] | None


@dataclass(frozen=True)
class Setting:
    """One setting as the CLI, the nodes and the checks see it."""

    name: str
    kind: str  # int | float | str | bool | list[str] | list[float] | ... (the annotation without "| None")
    optional: bool  # the annotation allows None
    default: Any
    help: str
    choices: Choices = None  # names (or a registry's names() function), compared case-insensitively by the CLI
    min: float | None = None
    max: float | None = None
    step: float | None = None  # the widget's increment
    flag: str | None = None  # "--cutn"; None: no flag made from it
    aliases: tuple[str, ...] = ()  # more flag spellings ("-cpe")
    cli: dict[str, Any] | None = None  # extra argparse keywords (nargs, action, metavar, const, ...)
    group: str = ""  # the --help section
    widget: str | None = None  # the ComfyUI widget's name (saved workflows fix it; None = the field's name)
    ui_default: Any = _UNSET  # the widget's default where a graph's differs from a command-line run's

    def options(self) -> list[str]:
        """The valid names (empty for a free value)."""
        if self.choices is None:
            return []
        return list(self.choices() if callable(self.choices) else self.choices)

    @property
    def widget_name(self) -> str:
        return self.widget or self.name

    @property
    def widget_default(self) -> Any:
        return self.default if self.ui_default is _UNSET else self.ui_default


def setting(default: Any = MISSING, *, help: str, default_factory: Callable[[], Any] | Any = MISSING,  # noqa: A002
            choices: Choices = None, min: float | None = None, max: float | None = None,  # noqa: A002
            step: float | None = None, flag: str | None | bool = True, aliases: tuple[str, ...] = (),
            cli: dict[str, Any] | None = None, group: str = "", widget: str | None = None,
            ui_default: Any = _UNSET) -> Any:
    """A dataclass field with its setting metadata (``flag=True``: ``--name-with-dashes``; ``False``: none)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "step": step, "flag": flag,
            "aliases": tuple(aliases), "cli": cli, "group": group, "widget": widget, "ui_default": ui_default}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: meta})
    return dataclasses.field(default=default, metadata={_KEY: meta})


def _kind(annotation: Any) -> tuple[str, bool]:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [p.strip() for p in text.split("|")]
    optional = "None" in parts
    rest = [p for p in parts if p != "None"]
    return (rest[0] if len(rest) == 1 else " | ".join(rest)), optional


@functools.cache
def settings_of(cls: type) -> dict[str, Setting]:
    """Every field of ``cls`` declared with :func:`setting`, in declaration order (read once per class; treat
    the mapping as read-only)."""
    out: dict[str, Setting] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is None:
            continue
        kind, optional = _kind(f.type)
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        flag = meta["flag"]
        if flag is True:
            flag = "--" + f.name.replace("_", "-")
        out[f.name] = Setting(name=f.name, kind=kind, optional=optional, default=default,
                              **{**meta, "flag": flag or None})
    return out


def check_settings(obj: Any) -> None:
    """Check every declared setting of a config instance against its range and choices (a ValueError naming the
    setting, its value and what is allowed)."""
    for s in settings_of(type(obj)).values():
        value = getattr(obj, s.name)
        if value is None:
            if not s.optional:
                raise ValueError(f"{s.name} needs a value")
            continue
        if s.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    s.kind == "int" and not isinstance(value, int)):
                what = "a whole number" if s.kind == "int" else "a number"
                raise ValueError(f"{s.name} must be {what}, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{s.name} must be a finite number, got {value!r}")
            if s.min is not None and value < s.min or s.max is not None and value > s.max:
                raise ValueError(f"{s.name} must be {_range(s)}, got {value!r}")
        elif s.kind == "str" and s.choices is not None:
            names = s.options()
            if value.lower() not in {n.lower() for n in names}:
                label = "valid names" if callable(s.choices) else "valid"  # a registry's wording (util.registry)
                raise ValueError(f"unknown {s.name} {value!r}; {label}: {', '.join(names)}")


def format_number(x: float) -> str:
    """1000000 as "1000000", 0.0001 as "0.0001" (not "1e+06")."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range(s: Setting) -> str:
    lo, hi = (None if v is None else format_number(v) for v in (s.min, s.max))
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def reject_unknown_keys(cls: type, keys: Any, what: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the keys that are not fields of dataclass ``cls`` (a typo never goes unnoticed)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(keys) - names)
    if unknown:
        raise error(f"unknown {what} {unknown}; valid: {sorted(names)}")
