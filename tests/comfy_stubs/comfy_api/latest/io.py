"""Stub of comfy_api.latest.io: schema classes that keep their arguments for inspection."""

import enum
from dataclasses import dataclass, field
from typing import Any


class Hidden(str, enum.Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


class _Input:
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, **options):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.options = options

    def __getattr__(self, name):
        try:
            return self.__dict__["options"][name]
        except KeyError:
            raise AttributeError(name) from None


class _Output:
    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list


def _make_type(io_type: str, name: str):
    input_cls = type("Input", (_Input,), {"io_type": io_type})
    output_cls = type("Output", (_Output,), {"io_type": io_type})
    return type(name, (), {"io_type": io_type, "Input": input_cls, "Output": output_cls})


Int = _make_type("INT", "Int")
Float = _make_type("FLOAT", "Float")
String = _make_type("STRING", "String")
Boolean = _make_type("BOOLEAN", "Boolean")
Combo = _make_type("COMBO", "Combo")
Image = _make_type("IMAGE", "Image")
Mask = _make_type("MASK", "Mask")
Latent = _make_type("LATENT", "Latent")


def Custom(io_type: str):  # noqa: N802 - mirrors the real API
    return _make_type(io_type, f"Custom_{io_type}")


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_output_node: bool = False
    not_idempotent: bool = False
    is_experimental: bool = False


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand=None, block_execution=None):
        self.args = args
        self.ui = ui

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    hidden = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError
