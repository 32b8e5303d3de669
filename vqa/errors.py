"""User mistakes: one line on stderr and exit status 2, never a traceback. Genuine bugs keep their traceback.

Every check that refuses a setting, a file or a checkpoint raises a `UserError` subclass (`ConfigError`,
`DataError`, `CheckpointError`) with a one-line message: which setting or file, what was found, what was expected.
Entry points (`train.py` and each `python -m vqa....` CLI) turn it into that line with `exit_on_user_error`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

USER_ERROR_EXIT_STATUS = 2  # as argparse uses for a bad command line
# In a multirun job's folder: why the job failed (vqa.run.run_in_sweep writes it, vqa.inspection.sweep_report reads it).
FAILURE_FILE = "error.json"


class UserError(Exception):
    """Bad input from the user. The message is one line: what, where, what was expected."""


class ConfigError(UserError, ValueError):
    """A wrong setting, reported before any data or model is built."""


class CheckpointError(UserError, ValueError):
    """A checkpoint folder that is missing, incomplete or damaged."""


class DivergenceError(UserError):
    """Training produced a non-finite number (loss, gradient norm, reward): the run stops instead of training on.

    Raised with what was non-finite (a reward names its function); the trainer adds the step and the last good
    checkpoint (`vqa.training.trainer.VQATrainer`)."""


def exit_with(message: str) -> NoReturn:
    """Print `error: <message>` on stderr (one line) and exit with status 2."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT_STATUS)


def one_line(message: str) -> str:
    """Join a multi-line message (a library's error text) into one line."""
    return "; ".join(line.strip().rstrip(".;") for line in str(message).splitlines() if line.strip())


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Inside this block a `UserError` becomes one line and exit status 2."""
    try:
        yield
    except UserError as error:
        exit_with(str(error))


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the `python -m vqa....` commands: a bad command line is one `error:` line and exit status 2 too,
    instead of argparse's usage block (`--help` still prints the usage)."""

    def error(self, message: str) -> NoReturn:
        exit_with(f"{message} (see {self.prog} --help)")
