"""Image-disjoint splits: held-out questions never share an image with the questions kept for training."""

from __future__ import annotations

import random

from datasets import Dataset

from vqa.data.schema import DataError


def split_by_image(dataset: Dataset, holdout: float | int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out the questions of a seeded random set of images.

    Args:
        holdout: a fraction of the images (0 < holdout < 1) or a number of images.

    Returns:
        (kept, held_out), each keeping the input's row order.
    """
    image_column = dataset["image_id"]
    image_ids = sorted(set(image_column))
    # A fraction holds out at least one image, so that tiny debug subsets still have a validation split.
    count = max(1, round(holdout * len(image_ids))) if isinstance(holdout, float) else holdout
    if not 0 < count < len(image_ids):
        raise DataError(
            f"holdout: got {holdout!r} ({count} of {len(image_ids)} images), expected to leave images on both sides"
        )
    random.Random(seed).shuffle(image_ids)
    held_images = set(image_ids[:count])
    held_rows = [row for row, image_id in enumerate(image_column) if image_id in held_images]
    kept_rows = [row for row, image_id in enumerate(image_column) if image_id not in held_images]
    return dataset.select(kept_rows), dataset.select(held_rows)
