"""Datasets in one shared schema: VQA v2 from the official files, easy-VQA from its package.

The names below are imported on first use. An eager import of `vqa.data.vqa_v2` here would make
`python -m vqa.data.vqa_v2` warn that the module was already imported when runpy runs it as `__main__`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vqa.data.build import BuildOptions, BuildReport
    from vqa.data.easy_vqa import EasyVQAOptions, build_easy_vqa
    from vqa.data.schema import DataError, TrainingSplits, has_answers
    from vqa.data.splits import split_by_image
    from vqa.data.vqa_v2 import build_vqa_v2

_SOURCES: dict[str, str] = {
    "BuildOptions": "vqa.data.build",
    "BuildReport": "vqa.data.build",
    "DataError": "vqa.data.schema",
    "EasyVQAOptions": "vqa.data.easy_vqa",
    "TrainingSplits": "vqa.data.schema",
    "build_easy_vqa": "vqa.data.easy_vqa",
    "build_vqa_v2": "vqa.data.vqa_v2",
    "has_answers": "vqa.data.schema",
    "split_by_image": "vqa.data.splits",
}

__all__ = [
    "BuildOptions",
    "BuildReport",
    "DataError",
    "EasyVQAOptions",
    "TrainingSplits",
    "build_easy_vqa",
    "build_vqa_v2",
    "has_answers",
    "split_by_image",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` (once: the value is then a module attribute)."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})
