"""Datasets in one shared schema: VQA v2 from the official files, easy-VQA from its package."""

from vqa.data.easy_vqa import EasyVQAOptions, build_easy_vqa
from vqa.data.schema import DataError, has_answers
from vqa.data.splits import split_by_image
from vqa.data.vqa_v2 import BuildOptions, BuildReport, build_vqa_v2

__all__ = [
    "BuildOptions",
    "BuildReport",
    "DataError",
    "EasyVQAOptions",
    "build_easy_vqa",
    "build_vqa_v2",
    "has_answers",
    "split_by_image",
]
