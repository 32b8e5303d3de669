"""`python train.py ...` in a subprocess, as a researcher runs it (the tests that run whole runs share this)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout: train.py and conf/
# Four steps end to end, without progress bars in the logs, and without report.html (a few seconds a run; the tests
# of the report ask for it).
FAST = ["debug=fast", "trainer.args.disable_tqdm=true", "report=false"]


def run_train(
    arguments: list[str], env: dict[str, str], command: list[str] | None = None
) -> subprocess.CompletedProcess:
    """Run train.py (under `command`, such as torchrun, instead of python when given); stdout and stderr captured."""
    return subprocess.run(
        [*(command or [sys.executable]), "train.py", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_train(arguments: list[str], env: dict[str, str], **popen: Any) -> subprocess.Popen:
    """train.py started in the background (to be killed, or beside other ranks); `popen`: Popen's own options."""
    return subprocess.Popen([sys.executable, "train.py", *arguments], cwd=ROOT, env=env, **popen)
