"""The installed environment: the package imports, and a CPU torch build never sits beside torchvision."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_cpu_torch_has_no_torchvision() -> None:
    if torch.version.cuda is not None:
        pytest.skip("a CUDA torch: torchvision belongs beside it (the gpu extra)")
    # The only torchvision wheel for torch 2.13 is a CUDA build; beside a CPU torch it breaks transformers.
    assert importlib.util.find_spec("torchvision") is None


def install_recipe(*variables: str) -> str:
    """What `make install` would run for a fresh venv, with the machine's kind forced by `variables`."""
    result = subprocess.run(
        ["make", "-n", "install", "VENV=/nonexistent/venv", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_install_takes_the_torch_build_of_the_machine() -> None:
    """A GPU host keeps its CUDA torch (system site packages, its version pinned) and gets torchvision; a CPU host
    pins the CPU build and adds PyTorch's CPU index only when it answers (offline, pip's own configuration provides
    the wheel)."""
    gpu = install_recipe("HAS_GPU=yes", f"PYTHON={sys.executable}")
    assert "-m venv --system-site-packages /nonexistent/venv" in gpu
    assert f'"torch=={torch.__version__}" -e ".[dev,gpu]"' in gpu and "--extra-index-url" not in gpu
    networked_cpu = install_recipe("HAS_GPU=", "TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    assert '--extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" -e ".[dev]"' in networked_cpu
    assert "--system-site-packages" not in networked_cpu
    offline_cpu = install_recipe("HAS_GPU=", "CPU_TORCH_INDEX=https://unreachable.invalid/whl/cpu")
    assert '"torch==2.13.0" -e ".[dev]"' in offline_cpu and "--extra-index-url" not in offline_cpu


def test_readme_quickstart_runs() -> None:
    """The README's first Python block is the quick start: it must run as written."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python block"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    answers = namespace["answers"]
    assert isinstance(answers, torch.Tensor) and answers.shape[0] == 2
