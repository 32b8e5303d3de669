"""Every number names where it came from: the commit (and a dirty tree), and the CPU or GPU model."""

from __future__ import annotations

import json
import platform
import re
import subprocess
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from vqa.provenance import cpu_model, git_commit, git_state, gpu_names, provenance
from vqa.run_outputs import run_card

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
SHA = re.compile(r"[0-9a-f]{40}")


def git(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True)


IN_GIT = git("rev-parse", "HEAD").returncode == 0
FULL_HISTORY = IN_GIT and git("rev-parse", "--is-shallow-repository").stdout.strip() == "false"
needs_git = pytest.mark.skipif(not IN_GIT, reason="not a git checkout")


@needs_git
def test_provenance_of_this_checkout_names_commit_dirty_and_cpu_model() -> None:
    block = provenance(ROOT)
    assert SHA.fullmatch(block["commit"]) and block["commit"] == git("rev-parse", "HEAD").stdout.strip()
    assert isinstance(block["dirty"], bool)
    assert block["dirty"] == bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    assert block["cpu_model"] and block["cpu_model"] == cpu_model()
    if platform.system() == "Linux":
        assert block["cpu_model"] != platform.machine(), "only the architecture: /proc/cpuinfo was not read"
    assert block["gpu"] == (", ".join(dict.fromkeys(gpu_names())) or None)
    assert block["packages"]["torch"] and block["python"] == platform.python_version() and block["argv"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", block["date"])
    json.dumps(block)  # goes into result files as it is


@needs_git
def test_git_commit_keeps_run_cards_format() -> None:
    state = git_state(ROOT)
    assert git_commit(ROOT) == state["commit"] + ("-dirty" if state["dirty"] else "")


def test_outside_git_the_commit_is_unknown(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    assert git_commit(tmp_path) is None


def test_results_exist() -> None:
    assert len(RESULTS) >= 10, "benchmarks/results/*.json not found"


@pytest.mark.parametrize("path", RESULTS, ids=[path.name for path in RESULTS])
def test_every_result_names_its_commit_and_machine(path: Path) -> None:
    block = json.loads(path.read_text()).get("provenance")
    assert isinstance(block, dict), f"{path.name}: no top-level provenance block (vqa.provenance.provenance)"
    commit = block.get("commit")
    assert isinstance(commit, str) and SHA.fullmatch(commit), f"{path.name}: commit {commit!r} is not 40 hex digits"
    if FULL_HISTORY:
        assert git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0, f"{path.name}: no commit {commit}"
    assert block.get("dirty") in (True, False, None)
    assert block.get("cpu_model") or block.get("gpu"), f"{path.name}: names neither a CPU model nor a GPU"
    if block.get("cpu_model"):
        assert block["cpu_model"] not in ("x86_64", "aarch64", "arm64", "AMD64"), f"{path.name}: only an architecture"


@needs_git
def test_run_card_gives_the_commit_and_a_device_naming_the_cpu_model() -> None:
    split = Dataset.from_dict({"question_id": [1, 2], "question": ["what color?", "what shape?"]})
    card = run_card(ROOT, {"train": split}, wall_seconds=1.0, train_metrics={}, world_size=1)
    assert card["git_commit"] == git_commit(ROOT)
    assert SHA.fullmatch(card["git_commit"].removesuffix("-dirty"))
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in card["device"]
    else:
        assert cpu_model() in card["device"] and card["device"].startswith("CPU (")
