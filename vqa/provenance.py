"""Where a measurement came from: the code's commit (and whether the tree had uncommitted changes), the machine
(CPU model, GPU names), Python and package versions, the command line and the date.

A run's `run_card.json` and every JSON file a benchmark writes take these from here, so that a number can be traced
to the code and the hardware that produced it, and two numbers taken on different machines are not compared unawares.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypedDict

import torch

PACKAGES = ("vqa", "torch", "transformers", "datasets", "accelerate", "tokenizers", "hydra-core", "wandb")


class GitState(TypedDict):
    """The checkout's HEAD commit (40 hex digits) and whether tracked files differ from it; None where unknown."""

    commit: str | None
    dirty: bool | None


def _git(folder: Path, *arguments: str) -> str | None:
    """stdout of `git <arguments>` run in `folder`, stripped; None when git is missing or the command fails."""
    try:
        finished = subprocess.run(["git", *arguments], cwd=folder, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return finished.stdout.strip()


def git_state(folder: Path) -> GitState:
    """The commit checked out in `folder` and whether the tree is dirty (tracked files changed; untracked files do
    not count). Both None outside a git checkout; `dirty` None when git cannot tell."""
    commit = _git(folder, "rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None}
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def git_commit(folder: Path) -> str | None:
    """The checkout's commit as one string, with `-dirty` appended when it has uncommitted changes (run_card.json's
    `git_commit`); None outside git."""
    state = git_state(folder)
    if state["commit"] is None:
        return None
    return state["commit"] + ("-dirty" if state["dirty"] else "")


def cpu_model() -> str:
    """The CPU's model name, e.g. "AMD EPYC 9654 96-Core Processor" (Linux's /proc/cpuinfo, macOS's sysctl); the
    architecture name ("x86_64") only where the system names no model."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    if platform.system() == "Darwin":
        brand = _sysctl("machdep.cpu.brand_string")
        if brand:
            return brand
    return platform.processor() or platform.machine()


def _sysctl(name: str) -> str | None:
    """`sysctl -n <name>` (macOS), or None."""
    try:
        finished = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return finished.stdout.strip() or None


def gpu_names() -> list[str]:
    """The name of every visible CUDA device, in index order; empty without CUDA."""
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


def device_description(device: str | None = None) -> str:
    """What a measurement ran on, in words: "2 x NVIDIA H100 80GB HBM3", or "CPU (AMD EPYC 9654 96-Core Processor,
    2 cores, 2 threads)" (cores: `os.cpu_count()`; threads: torch's intra-op threads).

    Args:
        device: the torch device the measurement used ("cpu", "cuda", "cuda:1"); None: the GPUs where CUDA is
            available (as the Trainer picks), else the CPU.
    """
    names = gpu_names()
    on_gpu = bool(names) if device is None else torch.device(device).type == "cuda" and bool(names)
    if on_gpu:
        return ", ".join(f"{names.count(name)} x {name}" for name in dict.fromkeys(names))
    return f"CPU ({cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None for one that is not installed)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(code_folder: Path, device: str | None = None) -> dict[str, Any]:
    """The `"provenance"` block of a result file: where its numbers came from.

    Args:
        code_folder: a folder inside the git checkout whose code ran.
        device: the torch device the measurement used, as for `device_description`.

    Returns:
        `commit` (40 hex digits or None), `dirty` (bool or None), `device` (in words), `cpu_model`, `gpu` (the
        machine's GPU name(s), whether or not the measurement used them; None without CUDA), `python`, `packages`,
        `argv` (the command line) and `date` (UTC, ISO 8601).
    """
    state = git_state(code_folder)
    gpus = gpu_names()
    return {
        "commit": state["commit"],
        "dirty": state["dirty"],
        "device": device_description(device),
        "cpu_model": cpu_model(),
        "gpu": ", ".join(dict.fromkeys(gpus)) or None,
        "python": platform.python_version(),
        "packages": package_versions(),
        "argv": list(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
