"""Checking image files before a dataset is written: existence and a readable header, never a full decode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from vqa.data.schema import DataError

MissingImagePolicy = Literal["error", "skip"]
POLICIES: tuple[str, ...] = ("error", "skip")


@dataclass
class ImageCheck:
    """Image ids whose file is missing or unreadable, in id order."""

    missing: list[int] = field(default_factory=list)
    corrupt: list[int] = field(default_factory=list)

    @property
    def bad(self) -> set[int]:
        return set(self.missing) | set(self.corrupt)


def validate_policy(policy: str) -> None:
    """Raises DataError unless `policy` is one of POLICIES (checked before any file is read)."""
    if policy not in POLICIES:
        raise DataError(f"missing_images: got {policy!r}, expected one of {', '.join(POLICIES)}")


def check_images(paths: Mapping[int, Path], policy: MissingImagePolicy) -> ImageCheck:
    """Stat each image and read its header (format and size only; pixels are not decoded).

    Raises:
        DataError: under policy `error`, naming the first missing (or else the first corrupt) file and the counts.
    """
    validate_policy(policy)
    result = ImageCheck()
    for image_id in tqdm(sorted(paths), desc="checking images", unit="img", mininterval=2.0, disable=None):
        path = paths[image_id]
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - the header is parsed on open; size proves it describes an image
        except FileNotFoundError:
            result.missing.append(image_id)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            result.corrupt.append(image_id)
    if policy == "error" and result.missing:
        raise DataError(
            f"{paths[result.missing[0]]}: image file not found ({len(result.missing)} of {len(paths)} images "
            "missing; set missing_images='skip' to drop their questions)"
        )
    if policy == "error" and result.corrupt:
        raise DataError(
            f"{paths[result.corrupt[0]]}: not a readable image ({len(result.corrupt)} of {len(paths)} images "
            "unreadable; set missing_images='skip' to drop their questions)"
        )
    return result
