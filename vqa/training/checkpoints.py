"""Checkpoints that survive kill -9: a manifest written last marks a Trainer checkpoint complete, and resuming takes
the newest checkpoint whose files match their manifest, naming each one it skips.

The Trainer writes `checkpoint-N/` file by file (weights, optimizer, scheduler, RNG states, trainer_state.json). A
run killed in the middle leaves a folder that looks like a checkpoint; a disk error or a copy cut short leaves one
whose files are truncated. `mark_complete` records every file's size and SHA-256 after the Trainer is done with the
folder; `checkpoint_problem` checks them again before a resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from vqa.data.cache import publish_folder
from vqa.errors import CheckpointError

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint_complete.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 8 MiB blocks (a base-size checkpoint is a few GiB)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def mark_complete(folder: Path) -> None:
    """Write `folder/MANIFEST`: each file's size and SHA-256. Written to a temporary name, synced, then renamed, so
    the manifest exists only whole and only after every file it lists."""
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": file_digest(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    staging = folder / f".{MANIFEST}.{uuid.uuid4().hex[:8]}"
    with staging.open("w") as file:
        json.dump({"files": files}, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.rename(staging, folder / MANIFEST)


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (one phrase), or None when every file matches its manifest."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST} (the run was stopped while writing it)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} has {size} bytes, expected {expected['bytes']} (truncated or replaced)"
        if file_digest(path) != expected["sha256"]:
            return f"{name} is damaged (its SHA-256 differs from the one recorded when it was written)"
    return None


def checkpoint_step(folder: Path) -> int:
    """The global step in a `checkpoint-N` folder's name."""
    match = CHECKPOINT_NAME.match(folder.name)
    if match is None:
        raise ValueError(f"{folder}: not a checkpoint-N folder")
    return int(match.group(1))


def trainer_checkpoints(run_dir: Path) -> list[Path]:
    """The run's `checkpoint-N` folders, newest (highest N) first."""
    folders = [path for path in run_dir.iterdir() if path.is_dir() and CHECKPOINT_NAME.match(path.name)]
    return sorted(folders, key=checkpoint_step, reverse=True)


def latest_complete_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of `run_dir` whose files are whole. Newer ones that are not are named in a warning
    and deleted: the resumed run writes them again when it reaches their step.

    Raises:
        CheckpointError: no checkpoint at all, or none complete.
    """
    skipped: list[str] = []
    for folder in trainer_checkpoints(run_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            for line in skipped:
                logger.warning("resume: skipped %s", line)
            return folder
        skipped.append(f"{folder.name}: {problem}")
    if not skipped:
        raise CheckpointError(
            f"resume: {run_dir} has no checkpoint-N folder; the run stopped before its first save "
            "(trainer.args.save_strategy / save_steps decide when it saves)"
        )
    raise CheckpointError(f"resume: {run_dir} has no complete checkpoint ({'; '.join(skipped)})")


def discard_incomplete(run_dir: Path, kept: Path) -> None:
    """Delete the checkpoints newer than `kept` (incomplete or damaged), one log line each."""
    for folder in trainer_checkpoints(run_dir):
        if checkpoint_step(folder) > checkpoint_step(kept):
            logger.warning("resume: deleting %s (incomplete or damaged; rewritten when training reaches it)", folder)
            shutil.rmtree(folder)


def replace_folder(final: Path, write: Callable[[Path], None]) -> None:
    """Publish `write`'s output as `final` in one rename, replacing an earlier `final` (a resumed run's re-saved
    `checkpoint/`). A kill at any moment leaves either the old folder or the new one, never a half-written one."""
    previous = final.with_name(f".{final.name}.replaced-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.rename(final, previous)
    publish_folder(final, write)
    shutil.rmtree(previous, ignore_errors=True)
