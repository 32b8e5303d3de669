"""Calls that differ across the supported transformers versions (pyproject.toml: the GPU image's 5.17 through the
newest release the registry serves), one function each, saying which versions want what."""

from __future__ import annotations

import inspect
import logging
from functools import cache

from transformers import GPT2LMHeadModel


@cache
def kv_cache_keyword() -> str:
    """The keyword under which GPT-2's `forward` and `generate` take a KV cache: `cache` in the releases that renamed
    it (5.25 has it; there `past_key_values` warns, and goes in 5.40 for `forward`, in 6.0 for `generate`), and
    `past_key_values` in the earlier ones (5.17, the GPU image's), which have no `cache`."""
    return "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


class GeneratedPaddingWarning(logging.Filter):
    """Drops transformers' "We strongly recommend passing in an `attention_mask`" for GPT-2 inside `generate`.

    Upstream cause (transformers 5.25, generation/utils.py, "We can drop the mask altogether if it's all 1s"):
    `generate` discards the all-ones attention mask that `VQAModel.generate` passes, and GPT-2's forward then warns,
    once per process, as soon as a row that already ended holds the pad token among its generated ids. Nothing is
    padded in these inputs, so the warning is wrong here; `VQAModel.generate` still passes the mask, and every other
    message of that logger gets through."""

    MESSAGE = "We strongly recommend passing in an `attention_mask`"

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.MESSAGE)


def quiet_generated_padding_warning() -> None:
    """Install `GeneratedPaddingWarning` on the logger that emits it (once; idempotent)."""
    emitter = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(existing, GeneratedPaddingWarning) for existing in emitter.filters):
        emitter.addFilter(GeneratedPaddingWarning())
