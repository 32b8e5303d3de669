"""Image-grouped sampling: the questions of one image sit next to each other, so a batch holds few images.

easy-VQA has about ten questions per image and VQA v2 about 5.4; with `image_index` (see `VQACollator`) each
distinct image in a batch is decoded and encoded once. Images are shuffled every epoch, and so are the questions
within each group.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class ImageGroupedSampler(Sampler[int]):
    """Yields dataset indices in groups of up to `questions_per_image` questions that share an image.

    Args:
        image_ids: the image id of every row, in dataset order.
        questions_per_image: the largest group; None keeps all of an image's questions together. Smaller groups
            put more distinct images in each batch (more image diversity per step, less encoder saving).
        seed: with the epoch (`set_epoch`), fixes the order, so a resumed run replays the same batches.
    """

    def __init__(self, image_ids: Sequence[int], questions_per_image: int | None = None, seed: int = 0) -> None:
        if questions_per_image is not None and questions_per_image < 1:
            raise ValueError(f"questions_per_image: got {questions_per_image}, expected a positive number or None")
        rows_by_image: dict[int, list[int]] = defaultdict(list)
        for row, image_id in enumerate(image_ids):
            rows_by_image[image_id].append(row)
        self.groups = list(rows_by_image.values())
        self.num_rows = len(image_ids)
        self.questions_per_image = questions_per_image
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        chunks: list[list[int]] = []
        for rows in self.groups:
            rows = rows.copy()
            rng.shuffle(rows)
            size = self.questions_per_image or len(rows)
            chunks.extend(rows[start : start + size] for start in range(0, len(rows), size))
        rng.shuffle(chunks)
        for chunk in chunks:
            yield from chunk
