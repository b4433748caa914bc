"""Command-line flags made from a config's declared settings (``vqgan_core.util.settings``): the flag's type,
choices, help and the default shown in ``--help`` all come from the field, so they cannot drift from it.

Every flag's argparse default is None ("not given"), so stored settings (``--from-png``, ``--resume``) and presets
apply first and only the flags a user typed override them; :func:`given_settings` collects those.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..util.settings import Setting, format_number, settings_of

__all__ = ["add_setting_flags", "flag_help", "given_settings"]

_SCALARS = {"int": int, "float": float, "str": str}


def flag_help(s: Setting) -> str:
    """The field's help with its default and valid names appended (what ``--help`` prints)."""
    text = s.help.rstrip(".")
    names = s.options()
    if names and s.kind == "str" and callable(s.choices):  # static menus show as argparse choices
        text += f" [{' | '.join(names)}]"
    if s.min is not None or s.max is not None:
        lo = "" if s.min is None else format_number(s.min)
        hi = "" if s.max is None else format_number(s.max)
        text += f" ({lo}..{hi})"
    default = s.default
    if isinstance(default, (list, tuple)):
        default = ",".join(map(str, default)) if default else None
    sets_a_constant = (s.cli or {}).get("action") in ("store_const", "store_true", "store_false")  # e.g. --no-clamp
    if default not in (None, "", False) and not sets_a_constant:
        text += f" (default: {default})"
    return text.replace("%", "%%")  # argparse formats help with %


def _kwargs(s: Setting) -> dict[str, Any]:
    kw: dict[str, Any] = {"dest": s.name, "default": None, "help": flag_help(s)}
    if s.kind == "bool":
        kw["action"] = argparse.BooleanOptionalAction
    elif s.kind in _SCALARS:
        kw["type"] = _SCALARS[s.kind]
        names = s.options()
        # static, case-sensitive menus become argparse choices; registries (case-insensitive) are checked by the config
        if names and not callable(s.choices):
            kw["choices"] = names
    kw.update(s.cli or {})
    if kw.get("action") in ("append", "store_const", "store_true", "store_false"):
        kw.pop("type", None)
        kw.pop("choices", None)
    return kw


def add_setting_flags(parser: argparse.ArgumentParser, groups: dict[str, Any], cls: type) -> None:
    """Add a flag for every declared setting of ``cls`` that has one, into the ``--help`` section its setting names
    (sections missing from ``groups`` are created)."""
    for s in settings_of(cls).values():
        if s.flag is None:
            continue
        if s.group not in groups:
            groups[s.group] = parser.add_argument_group(s.group) if s.group else parser
        groups[s.group].add_argument(*s.aliases, s.flag, **_kwargs(s))


def given_settings(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` whose flags were given on this command line (name -> value)."""
    out = {}
    for s in settings_of(cls).values():
        if s.flag is not None and getattr(args, s.name, None) is not None:
            out[s.name] = getattr(args, s.name)
    return out
