"""Image-disjoint splits: held-out questions never share an image with the questions kept for training."""

from __future__ import annotations

import random

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
    validate_holdout("holdout", holdout)
    image_column = column(dataset, "image_id")
    image_ids = sorted(set(image_column))
    # A fraction holds out at least one image, so that tiny debug subsets still have a validation split.
    count = max(1, round(holdout * len(image_ids))) if isinstance(holdout, float) else holdout
    if not count < len(image_ids):
        raise DataError(
            f"holdout: got {holdout!r} ({count} of {len(image_ids)} images), expected to leave images on both sides"
        )
    random.Random(seed).shuffle(image_ids)
    held_images = set(image_ids[:count])
    held_rows = [row for row, image_id in enumerate(image_column) if image_id in held_images]
    kept_rows = [row for row, image_id in enumerate(image_column) if image_id not in held_images]
    return dataset.select(kept_rows), dataset.select(held_rows)
