"""Image-disjoint splits: held-out questions never share an image with the questions kept for training."""

from __future__ import annotations

import random
from collections.abc import Iterable

from datasets import Dataset

from vqa.data.schema import DataError, column


def validate_holdout(name: str, holdout: float | int) -> None:
    """Raises DataError unless `holdout` is a fraction (float, 0 < f < 1) or a number of images (int >= 1)."""
    if isinstance(holdout, bool) or not isinstance(holdout, int | float):
        raise DataError(f"{name}: got {holdout!r}, expected a fraction (0 < f < 1) or a number of images (>= 1)")
    if isinstance(holdout, float) and not 0 < holdout < 1:
        raise DataError(f"{name}: got {holdout!r}, expected a fraction between 0 and 1 (exclusive) or an integer count")
    if isinstance(holdout, int) and holdout < 1:
        raise DataError(f"{name}: got {holdout!r}, expected a positive number of images or a fraction")


def split_by_image(dataset: Dataset, holdout: float | int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out the questions of a seeded random set of images.

    Args:
        holdout: a fraction of the images (0 < holdout < 1) or a number of images (>= 1).

    Returns:
        (kept, held_out), each keeping the input's row order.
    """
    image_column = column(dataset, "image_id")
    held_images = held_out_images(image_column, holdout, seed)
    held_rows = [row for row, image_id in enumerate(image_column) if image_id in held_images]
    kept_rows = [row for row, image_id in enumerate(image_column) if image_id not in held_images]
    return dataset.select(kept_rows), dataset.select(held_rows)


def held_out_images(image_ids: Iterable[int], holdout: float | int, seed: int = 0) -> set[int]:
    """The seeded random set of distinct `image_ids` that `split_by_image` holds out (`holdout` as there)."""
    validate_holdout("holdout", holdout)
    distinct = sorted(set(image_ids))
    # A fraction holds out at least one image, so that tiny debug subsets still have a validation split.
    count = max(1, round(holdout * len(distinct))) if isinstance(holdout, float) else holdout
    if not count < len(distinct):
        raise DataError(
            f"holdout: got {holdout!r} ({count} of {len(distinct)} images), expected to leave images on both sides"
        )
    random.Random(seed).shuffle(distinct)
    return set(distinct[:count])
