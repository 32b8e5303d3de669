"""Build-once dataset caching: a folder per input fingerprint, published by an atomic rename.

A build writes into a temporary folder beside the final one and renames it when complete, so an interrupted
build (exception, Ctrl-C, SIGKILL) never leaves a folder that a later run would load as finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

logger = logging.getLogger(__name__)

REPORT_FILE = "build_report.json"


def fingerprint(key: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable description of the inputs and options."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_signature(path: Path) -> list[Any]:
    """Identify a file's version cheaply (no read): its resolved path, size and modification time."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def cached_build(
    cache_dir: Path,
    name: str,
    key: dict[str, Any],
    build: Callable[[], tuple[Dataset, dict[str, Any]]],
) -> tuple[Dataset, dict[str, Any], Path]:
    """Load `cache_dir/name-<fingerprint>` if it exists; otherwise run `build` and publish its output there.

    Args:
        build: returns the dataset in its stored form and a JSON-serialisable build report.

    Returns:
        The dataset (memory-mapped from the cache folder), the build report, and the folder.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{name}-{fingerprint(key)}"
    if not final.is_dir():
        dataset, report = build()

        def write(staging: Path) -> None:
            dataset.save_to_disk(str(staging))
            (staging / REPORT_FILE).write_text(json.dumps({"key": key, **report}, indent=2))

        publish_folder(final, write)
        logger.info("built %s", final)
    else:
        logger.info("loaded %s from cache", final)
    report = json.loads((final / REPORT_FILE).read_text())
    report.pop("key", None)
    return load_from_disk(str(final)), report, final


def publish_folder(final: Path, write: Callable[[Path], None]) -> None:
    """Run `write(staging)` on a temporary folder beside `final`, then rename it to `final` in one step."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        write(staging)
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():  # a concurrent build (another rank) publishing first is fine; anything else is not
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
