"""The installed environment: the package imports, and a CPU torch build never sits beside torchvision."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_cpu_torch_has_no_torchvision() -> None:
    if torch.version.cuda is None:
        # The only torchvision wheel for torch 2.13 is a CUDA build; beside a CPU torch it breaks transformers.
        assert importlib.util.find_spec("torchvision") is None


def test_readme_quickstart_runs() -> None:
    """The README's first Python block is the quick start: it must run as written."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python block"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    answers = namespace["answers"]
    assert isinstance(answers, torch.Tensor) and answers.shape[0] == 2
