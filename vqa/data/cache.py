"""Build-once dataset caching: a folder per input fingerprint, published by an atomic rename.

A build writes into a staging folder beside the final one and renames it when complete, so an interrupted
build (exception, Ctrl-C, SIGKILL) never leaves a folder that a later run would load as finished. A staging
folder is named after its host and process; one whose process has died (a SIGKILL leaves it behind) is removed
by the next build in the same cache folder.

A disk that fills while a folder is written (ENOSPC, or a quota: EDQUOT) ends the build with one line naming the
folder, the space the write needed and the space free (`DiskFullError`); the staging folder is removed first, so
nothing half-written is left.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset, config, load_from_disk
from datasets.arrow_writer import ArrowWriter

from vqa.data.schema import quiet_datasets
from vqa.errors import UserError

logger = logging.getLogger(__name__)

REPORT_FILE = "build_report.json"
STAGING_MARK = ".partial-"
DATA_FILE = "data-00000-of-00001.arrow"  # save_to_disk's name for a one-shard dataset
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
CACHE_ADVICE = "free space there, or set the cache folder to one on a larger disk (VQA_CACHE=... or data.cache_dir=...)"


class DiskFullError(UserError):
    """No space left (or the quota reached) while a folder was written; the half-written folder is gone."""


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
        build: returns the dataset and a JSON-serialisable build report (stored as build_report.json).

    Returns:
        The dataset (memory-mapped from the cache folder), the build report, and the folder.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{name}-{fingerprint(key)}"
    if not final.is_dir():
        dataset, report = build()

        def write(staging: Path) -> None:
            save_dataset(dataset, staging)
            (staging / REPORT_FILE).write_text(json.dumps({"key": key, **report}, indent=2))

        publish_folder(final, write, needed_bytes=dataset_bytes(dataset), advice=CACHE_ADVICE)
        logger.info("built %s", final)
    else:
        logger.info("loaded %s from cache", final)
    report = json.loads((final / REPORT_FILE).read_text())
    report.pop("key", None)
    with quiet_datasets():
        return load_from_disk(str(final)), report, final


def save_dataset(dataset: Dataset, folder: Path) -> None:
    """Write `dataset` in `save_to_disk`'s folder format, without copying the files its Image column points to.

    `Dataset.save_to_disk` always embeds local image files into the Arrow data (its writer has
    `embed_local_files=True`): every question would carry a copy of its image. Here the same writer runs with
    `embed_local_files=False`, and the two JSON files `load_from_disk` reads are written as `save_to_disk` does,
    so `datasets.load_from_disk(folder)` returns the dataset with its features (the image as `datasets.Image()`).
    """
    folder.mkdir(parents=True, exist_ok=True)  # a staging folder: new, or made by the caller
    # The writer's default batch size for image features (100 rows) is meant for embedded bytes; paths are small.
    with (
        quiet_datasets(),
        ArrowWriter(
            features=dataset.features,
            path=str(folder / DATA_FILE),
            writer_batch_size=config.DEFAULT_MAX_BATCH_SIZE,
            embed_local_files=False,
        ) as writer,
    ):
        for batch in dataset.with_format("arrow").iter(batch_size=config.DEFAULT_MAX_BATCH_SIZE):
            writer.write_table(batch)
        writer.finalize()
    dataset.info.write_to_directory(str(folder))
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        "_fingerprint": dataset._fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (folder / config.DATASET_STATE_JSON_FILENAME).write_text(json.dumps(state, indent=2, sort_keys=True))


def dataset_bytes(dataset: Dataset) -> int:
    """About how many bytes `save_dataset` writes for `dataset`: its rows' share of the Arrow table it reads from."""
    table = dataset.data
    return table.nbytes * len(dataset) // max(1, table.num_rows)


def publish_folder(
    final: Path,
    write: Callable[[Path], None],
    needed_bytes: int | None = None,
    advice: str = "free space there, or write to a folder on a larger disk",
) -> None:
    """Run `write(staging)` on a staging folder beside `final`, then rename it to `final` in one step.

    Stale staging folders of dead processes in the same parent folder are removed first.

    Args:
        needed_bytes: about what `write` writes, for the message when the disk fills.
        advice: what that message tells the user to do.

    Raises:
        DiskFullError: the disk filled (ENOSPC) or the quota was reached (EDQUOT) during `write`.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final.parent)
    staging = staging_folder(final)
    try:
        write(staging)
        os.rename(staging, final)
    except OSError as error:
        if final.is_dir():  # a concurrent build (another rank) publishing first is fine; anything else is not
            return
        if error.errno in DISK_FULL:
            shutil.rmtree(staging, ignore_errors=True)  # before measuring: the space it took is free again
            raise disk_full(final, needed_bytes, advice) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def disk_full(final: Path, needed_bytes: int | None, advice: str) -> DiskFullError:
    """The one-line error for a disk that filled while `final` was written: the folder, the space needed, the space
    free there now."""
    free = shutil.disk_usage(final.parent).free
    needed = f"about {_size(needed_bytes)} needed, " if needed_bytes else ""
    return DiskFullError(
        f"{final.parent}: no space left on its disk while writing {final.name} ({needed}{_size(free)} free); "
        f"{advice}. Nothing half-written was kept"
    )


def _size(count: float) -> str:
    """Bytes in words: '512 bytes', '3.4 MiB', '12.0 GiB'."""
    units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
    while count >= 1024 and len(units) > 1:
        count /= 1024
        units.pop(0)
    return f"{count:.0f} bytes" if units[0] == "bytes" else f"{count:.1f} {units[0]}"


def staging_folder(final: Path) -> Path:
    """`.NAME.partial-HOST-PID-RANDOM` beside `final`: the owner can be told to be dead or alive later."""
    return final.parent / f".{final.name}{STAGING_MARK}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_staging(parent: Path) -> None:
    """Delete the staging folders in `parent` whose process is dead on this host, logging each with its size.

    A folder of a live process (another rank building right now), of another host (a shared file system: its
    processes cannot be checked from here), or with a name that does not say its owner is left alone.
    """
    host = socket.gethostname()
    for folder in parent.glob(f".*{STAGING_MARK}*"):
        owner = staging_owner(folder.name)
        if owner is None or owner[0] != host or process_alive(owner[1]) or not folder.is_dir():
            continue
        size = folder_size(folder)
        shutil.rmtree(folder, ignore_errors=True)  # a concurrent cleaner may remove it first
        logger.info("removed stale staging folder %s (%.1f MiB) of dead process %d", folder, size / 2**20, owner[1])


def staging_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) from a staging folder's name, or None when it does not carry them (older builds)."""
    _, mark, tail = name.rpartition(STAGING_MARK)
    parts = tail.rsplit("-", 2)
    if not mark or len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) <= 0:
        return None
    return parts[0], int(parts[1])


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def folder_size(folder: Path) -> int:
    """Bytes in the files under `folder` (0 for what vanished meanwhile)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            continue
    return total
