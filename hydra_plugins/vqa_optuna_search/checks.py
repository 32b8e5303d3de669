"""The search's own settings, checked when the sweeper is built, before any trial: each mistake one line
(`vqa.errors.ConfigError`) instead of a traceback from Optuna, SQLAlchemy or the plugin, or a search that never ends.

- `n_trials` < 1 would run nothing and then fail asking the empty study for its best trial; `n_jobs` < 1 would loop
  forever (the plugin launches batches of `n_jobs` trials until `n_trials` are done); `max_failure_rate` outside
  [0, 1] fails an assertion inside the plugin.
- An SQLite storage must be an SQLite file (or not exist yet) that this process can write: a damaged or foreign file,
  or a read-only one, would fail inside SQLAlchemy at the first trial.

No Optuna import here: the checks run before the plugin's own code.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from vqa.errors import ConfigError

SQLITE_PREFIX = "sqlite:///"
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database file


def check_search_settings(
    storage: Any = None, n_trials: Any = 1, n_jobs: Any = 1, max_failure_rate: Any = 0.0, **_: Any
) -> None:
    """The Optuna sweeper's settings (the keyword arguments it is built with; others are ignored here).

    Raises:
        ConfigError: one line naming `hydra.sweeper.<setting>` (the storage file for a storage problem).
    """
    for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"hydra.sweeper.{name}: got {value!r}, expected a positive integer")
    if (
        isinstance(max_failure_rate, bool)
        or not isinstance(max_failure_rate, int | float)
        or not (0 <= max_failure_rate <= 1)
    ):
        raise ConfigError(f"hydra.sweeper.max_failure_rate: got {max_failure_rate!r}, expected a number in [0, 1]")
    if isinstance(storage, str) and storage.startswith(SQLITE_PREFIX):
        check_sqlite_file(Path(storage.removeprefix(SQLITE_PREFIX)))


def check_sqlite_file(path: Path) -> None:
    """An SQLite study file: absent (created by the first trial, in a folder this process can write), empty, or an
    SQLite database that this process can write.

    Raises:
        ConfigError: one line naming the file and what is wrong with it.
    """
    setting = "hydra.sweeper.storage"
    if not path.exists():
        folder = next((parent for parent in path.parents if parent.exists()), Path("."))
        if not writable(folder):
            raise ConfigError(f"{setting}: cannot create {path}: {folder} is not writable by this process")
        return
    if not path.is_file():
        raise ConfigError(f"{setting}: {path} is not a file; expected an SQLite study file (or none yet)")
    with path.open("rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise ConfigError(
            f"{setting}: {path} is not an SQLite database (damaged, or another kind of file); move it away to start "
            "a new study there, or point hydra.sweeper.storage at the study's own file"
        )
    if not writable(path) or not writable(path.parent):
        what = path if not writable(path) else path.parent
        raise ConfigError(
            f"{setting}: {what} is read-only; the study records every trial in {path.name} (and SQLite writes its "
            "journal beside it): make it writable, or copy the study to a writable folder and point "
            "hydra.sweeper.storage there"
        )


def writable(path: Path) -> bool:
    """Writable by this process, and not marked read-only for everyone: root may write a file without any write
    permission bit, but such a file was made read-only on purpose (a finished study kept as it is)."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
