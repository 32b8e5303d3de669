"""Fault survey: bad inputs and faults through the real entry points, each outcome classified.

    .venv/bin/python benchmarks/fault_survey.py [--out benchmarks/results/fault_survey.json] [--only SUBSTRING] [--keep]

A measurement, not a test: it makes its fixtures in a temporary folder (tiny official-format VQA v2 files with
COCO-named JPEGs from `tests/vqa_v2_fixture.py`, decompression-bomb PNGs, two short easy-VQA training runs: a plain
`debug=fast` run for its `checkpoint/` and a run that saves `checkpoint-2` and `checkpoint-4` for the resume cases),
runs every case as a subprocess of `train.py` or a `python -m vqa....` CLI (two at a time), and writes
`{"cases": [...], "counts": {outcome: n}}` plus a table on stdout. Each case records its name, category, command
(with the temporary folder written as `<tmp>`), exit status, outcome, stderr tail, what it expected and why it got
its outcome (`detail`). Subprocesses run offline: HF_HUB_OFFLINE=1, WANDB_MODE=disabled, VQA_CACHE and
VQA_FEATURE_CACHE in the temporary folder, OMP_NUM_THREADS=1 (two cases share the two cores). Config cases add
`debug=fast` (unless they name a config group option), so a bad setting that is accepted trains for four steps, not
for the default 12 epochs. `--only` runs the cases whose name contains the text (give it another `--out` to keep the
full survey's file); `--keep` keeps the temporary folder.

The project's rule: a user's mistake ends with one line on stderr starting with `error: ` and exit status 2, or is
handled (counted and reported, or recovered from); never a traceback, never a silently wrong result.

Outcomes, decided in this order:

- `traceback`: "Traceback" appears anywhere in stderr (whatever the exit status).
- `one_line_error`: exit status 2, and stderr has exactly one *counted* line, which starts with `error: ` and is
  the last non-empty line of stderr. Counted lines are the lines of stderr (split at "\\n" and at "\\r", which tqdm
  uses to redraw a bar) that are none of these ordinary log lines:
    1. blank;
    2. a tqdm progress bar: ends with tqdm's timing bracket, e.g. `[00:00<00:00, 12.1it/s]` or `[00:01, 3.2img/s]`;
    3. a logging record in Hydra's format at DEBUG, INFO or WARNING level:
       `[YYYY-MM-DD HH:MM:SS,mmm][logger][LEVEL] - ...`;
    4. one of the `vqa` package's own log messages as printed with the bare `%(message)s` format
       (`python -m vqa.data.vqa_v2` configures that): the whole line matches the format string of a
       `logger.debug/info/warning(...)` call found in `vqa/**/*.py` (read with `ast`; each %-placeholder may stand for
       any text; format lines with fewer than 5 literal characters are not used).
  Python warnings, notes, library messages and a second `error:` line all count, so they make the case `other`.
  A case may also check what the failed command left behind (e.g. a misspelt `resume=` path must leave no folder,
  a refused override must leave the run as it was); a failed post-check makes the case `other`, with the reason.
  A case that expected `handled` but got such an error is still `one_line_error`; its detail says so.
- `handled`: exit status 0 and the case's own check found the expected evidence (a count in the build report or
  metrics.json, a "skipped checkpoint-4" log line, metrics and predictions equal to an uninterrupted run, ...).
- `silently_wrong`: exit status 0, but either the case expected a refusal (the bad input was accepted) or the
  case's check found the result wrong or unreported.
- `other`: anything else (exit status 1 with a Hydra message, argparse's two-line usage error, a timeout, a kill
  hook that did not fire, extra stderr lines around an `error:` line, a failed post-check).
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.helpers.vqa_v2_fixture

from PIL import Image  # noqa: E402

from tests.helpers.vqa_v2_fixture import write_vqa_v2  # noqa: E402
from vqa.provenance import provenance  # noqa: E402

VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PY = str(VENV_PYTHON) if VENV_PYTHON.is_file() else sys.executable
OUTCOMES = ("one_line_error", "handled", "traceback", "silently_wrong", "other")
ERROR, HANDLED, EITHER = "error", "handled", "error or handled"
DEFAULT_TIMEOUT = 300

# Four training steps; with the two save options a checkpoint every two steps (as in tests/test_resume.py).
FAST = ["debug=fast", "trainer.args.disable_tqdm=true"]
SAVING = [*FAST, "trainer.args.save_strategy=steps", "trainer.args.save_steps=2", "shuffled_image_check=false"]

QUESTION = "what color is the shape?"

# --- classification ------------------------------------------------------------------------------------------------

HYDRA_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[[^\]]*\]\[(DEBUG|INFO|WARNING)\] - ")
PROGRESS_BAR = re.compile(r"\[\d+:\d\d(:\d\d)?(<[^\]]*)?(, [^\]]*)?\]\s*$")
PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[sdifrgxeEGc]")


def vqa_log_formats() -> list[re.Pattern[str]]:
    """One regex per line of each `logger.debug/info/warning` format string in the `vqa` package."""
    patterns = []
    for path in sorted((ROOT / "vqa").rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):  # another engineer's edit in progress
            continue
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("debug", "info", "warning")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                continue
            for line in node.args[0].value.splitlines():
                parts = PLACEHOLDER.split(line)  # the literal text between placeholders
                if len("".join(parts).strip()) < 5:
                    continue
                patterns.append(re.compile("^" + ".*".join(re.escape(part) for part in parts) + "$"))
    return patterns


LOG_FORMATS: list[re.Pattern[str]] = []


def is_log_line(line: str) -> bool:
    text = line.strip()
    if not text or PROGRESS_BAR.search(text) or HYDRA_LOG.match(text):
        return True
    return any(pattern.match(text) for pattern in LOG_FORMATS)


def counted_lines(stderr: str) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]", stderr) if not is_log_line(line)]


@dataclass
class Step:
    """The command a case measures, and what was done before it."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    setup: str = ""
    timeout: int = DEFAULT_TIMEOUT
    not_measured: str | None = None  # the setup did not produce the fault (e.g. a kill hook that did not fire)


@dataclass
class Outcome:
    exit_status: int | None
    stdout: str
    stderr: str
    seconds: float


Check = Callable[[Outcome, Path], str | None]


@dataclass
class Case:
    """A fault: `prepare` makes its files in `work` (and runs any setup commands) and returns the command to measure;
    `check` returns what is wrong (None: fine): for `handled` and `either` cases the evidence after exit 0, for
    `error` cases a post-condition after exit 2. `expect` is ERROR (exit 0 is silently wrong), HANDLED, or EITHER
    (a one-line refusal and a reported recovery are both right)."""

    name: str
    category: str
    expect: str
    prepare: Callable[[Fixtures, Path], Step]
    check: Check | None = None
    needs: tuple[str, ...] = ()


def classify(case: Case, outcome: Outcome, work: Path) -> tuple[str, str]:
    stderr = outcome.stderr
    if outcome.exit_status is None:
        return "other", "timed out"
    if "Traceback" in stderr:
        return "traceback", f"exit {outcome.exit_status} with a traceback"
    if outcome.exit_status == 2:
        lines = counted_lines(stderr)
        last = next((line.strip() for line in reversed(re.split(r"[\r\n]", stderr)) if line.strip()), "")
        if len(lines) != 1 or not lines[0].startswith("error: ") or last != lines[0]:
            return "other", f"exit 2 but {len(lines)} counted stderr lines: {lines[:4]}"
        problem = case.check(outcome, work) if (case.check and case.expect == ERROR) else None
        if problem:
            return "other", f"one-line error, but {problem}"
        expected = "(expected handled) " if case.expect == HANDLED else ""
        return "one_line_error", expected + lines[0][:200]
    if outcome.exit_status == 0:
        if case.expect == ERROR:
            said = [line.strip() for line in outcome.stdout.splitlines() if line.strip()][-2:]
            return "silently_wrong", f"exit 0: the bad input was accepted without an error (stdout ends {said})"
        problem = case.check(outcome, work) if case.check else None
        if problem:
            return "silently_wrong", problem
        evidence = getattr(case.check, "__doc__", None) or "the expected evidence was found"
        return "handled", "exit 0; " + " ".join(evidence.split())
    return "other", f"exit {outcome.exit_status}"


# --- fixtures ------------------------------------------------------------------------------------------------------


class FixtureError(RuntimeError):
    pass


class Fixtures:
    """Shared inputs, each made once (thread-safe) on first use."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "disabled",
            "VQA_CACHE": str(tmp / "cache"),
            "VQA_FEATURE_CACHE": str(tmp / "features"),
            "OMP_NUM_THREADS": "1",
        }
        self.env.pop("PYTHONPATH", None)
        self._locks: dict[str, threading.Lock] = {}
        self._values: dict[str, Any] = {}
        self._guard = threading.Lock()

    def once(self, name: str, make: Callable[[], Any]) -> Any:
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._values:
                try:
                    self._values[name] = make()
                except Exception as error:  # remembered, so that every case that needs it says so
                    self._values[name] = FixtureError(f"fixture {name} failed: {error}")
            value = self._values[name]
        if isinstance(value, FixtureError):
            raise value
        return value

    def run(self, argv: list[str], env: dict[str, str] | None = None, timeout: int = DEFAULT_TIMEOUT) -> Outcome:
        start = time.perf_counter()
        try:
            done = subprocess.run(
                argv, cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as error:
            return Outcome(None, _text(error.stdout), _text(error.stderr), time.perf_counter() - start)
        return Outcome(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)

    # VQA v2 -------------------------------------------------------------------------------------------------------
    def v2_pristine(self) -> Path:
        return self.once("v2", lambda: write_vqa_v2(self.tmp / "v2-pristine"))

    def v2_copy(self, work: Path) -> Path:
        root = work / "vqa"
        shutil.copytree(self.v2_pristine(), root)
        return root

    def bomb(self, side: int) -> Path:
        """A single-colour greyscale PNG of side x side pixels (a small file, a huge decode)."""

        def make() -> Path:
            path = self.tmp / f"bomb-{side}.png"
            Image.new("L", (side, side), color=0).save(path, format="PNG", optimize=False)
            size = path.stat().st_size
            if size > 2 << 20:
                raise FixtureError(f"{path} has {size} bytes; expected a small file")
            return path

        return self.once(f"bomb-{side}", make)

    # training runs ------------------------------------------------------------------------------------------------
    def _train_run(self, name: str, overrides: list[str]) -> Path:
        def make() -> Path:
            run_dir = self.tmp / name
            outcome = self.run([PY, "train.py", *overrides, f"hydra.run.dir={run_dir}"], timeout=600)
            if outcome.exit_status != 0:
                raise FixtureError(f"train.py exit {outcome.exit_status}: {outcome.stderr[-500:]}")
            return run_dir

        return self.once(name, make)

    def fast_run(self) -> Path:
        """`train.py debug=fast`: a run folder with `checkpoint/` and no checkpoint-N."""
        return self._train_run("fast-run", FAST)

    def reference(self) -> Path:
        """An uninterrupted run with checkpoint-2 and checkpoint-4 (the resume cases copy it)."""
        return self._train_run("reference-run", SAVING)

    def hooks(self) -> Path:
        def make() -> Path:
            folder = self.tmp / "hooks"
            folder.mkdir()
            (folder / "sitecustomize.py").write_text(KILL_HOOKS)
            return folder

        return self.once("hooks", make)

    def image(self) -> Path:
        """An easy-VQA test image (64x64 PNG) for predict."""

        def make() -> Path:
            import easy_vqa

            return Path(sorted(easy_vqa.get_test_image_paths().items())[0][1])

        return self.once("image", make)

    def prepare_needed(self, names: set[str]) -> None:
        """Make the expensive fixtures first, two at a time."""
        makers = {"fast_run": self.fast_run, "reference": self.reference}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(makers[name]) for name in sorted(names) if name in makers]
            for future in futures:
                try:
                    future.result()
                except FixtureError as error:
                    print(f"warning: {error}", file=sys.stderr)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# Loaded at interpreter start (sitecustomize on PYTHONPATH). FAULT_SURVEY_KILL="<hook>:<regex>": the write whose path
# matches the regex writes half its bytes (or nothing), then the process kills itself with SIGKILL, as a power cut
# or the OOM killer would.
KILL_HOOKS = r"""
import io
import os
import re
import signal

_TARGET = os.environ.get("FAULT_SURVEY_KILL")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _matches(path):
    return isinstance(path, (str, os.PathLike)) and _REGEX.search(os.fspath(path).replace(os.sep, "/")) is not None


def _write_half_then_die(path, data):
    with open(path, "wb") as file:
        file.write(data[: len(data) // 2])
        file.flush()
        os.fsync(file.fileno())
    _die()


if _TARGET:
    _HOOK, _, _PATTERN = _TARGET.partition(":")
    _REGEX = re.compile(_PATTERN)
    if _HOOK == "torch_save":
        import torch

        _save = torch.save

        def _save_then_die(obj, f, *args, **kwargs):
            if _matches(f):
                buffer = io.BytesIO()
                _save(obj, buffer, *args, **kwargs)
                _write_half_then_die(f, buffer.getvalue())
            return _save(obj, f, *args, **kwargs)

        torch.save = _save_then_die
    elif _HOOK == "safetensors":
        import safetensors.torch as _st

        _save_file = _st.save_file

        def _save_file_then_die(tensors, filename, metadata=None, *args, **kwargs):
            if _matches(filename):
                _write_half_then_die(filename, _st.save(tensors, metadata=metadata))
            return _save_file(tensors, filename, metadata, *args, **kwargs)

        _st.save_file = _save_file_then_die
    elif _HOOK == "trainer_state":
        import dataclasses
        import json

        from transformers import trainer_callback

        _save_to_json = trainer_callback.TrainerState.save_to_json

        def _save_to_json_then_die(self, json_path):
            if _matches(json_path):
                text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
                _write_half_then_die(json_path, text.encode())
            return _save_to_json(self, json_path)

        trainer_callback.TrainerState.save_to_json = _save_to_json_then_die
    elif _HOOK == "publish":
        _rename = os.rename

        def _rename_or_die(src, dst, *args, **kwargs):
            if _matches(src):
                _die()
            return _rename(src, dst, *args, **kwargs)

        os.rename = _rename_or_die
    elif _HOOK == "arrow_write":
        from datasets import arrow_writer

        _write_table = arrow_writer.ArrowWriter.write_table

        def _write_table_then_die(self, *args, **kwargs):
            result = _write_table(self, *args, **kwargs)
            if _matches(getattr(self, "_path", None) or ""):
                self.stream.flush()
                _die()
            return result

        arrow_writer.ArrowWriter.write_table = _write_table_then_die
"""


# --- helpers for cases ---------------------------------------------------------------------------------------------

TRAIN_Q = "v2_OpenEnded_mscoco_train2014_questions.json"
TRAIN_A = "v2_mscoco_train2014_annotations.json"
VAL_Q = "v2_OpenEnded_mscoco_val2014_questions.json"
VAL_A = "v2_mscoco_val2014_annotations.json"


def train_image(root: Path, image_id: int = 9) -> Path:
    return root / "train2014" / f"COCO_train2014_{image_id:012d}.jpg"


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    """Load, change in place (what `change` returns is ignored), write back."""
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def summary(stdout: str) -> dict[str, str]:
    """`python -m vqa.data.vqa_v2`'s report: one `key value` per line."""
    pairs = (line.split(None, 1) for line in stdout.splitlines() if line.strip())
    return {pair[0]: pair[1].strip() for pair in pairs if len(pair) == 2}


def report_says(**expected: int) -> Check:
    def check(outcome: Outcome, work: Path) -> str | None:
        """the build report shows the expected counts"""
        found = summary(outcome.stdout)
        wrong = {key: found.get(key) for key, value in expected.items() if found.get(key) != str(value)}
        return f"build report has {wrong}, expected {expected}" if wrong else None

    check.__doc__ = "the build report shows " + ", ".join(f"{key} {value}" for key, value in expected.items())
    return check


def metrics_dropped(**expected: int) -> Check:
    """metrics.json `data.dropped` counts at least these, and the summary names them."""

    def check(outcome: Outcome, work: Path) -> str | None:
        """metrics.json data.dropped and the run summary report what was dropped"""
        path = work / "run" / "metrics.json"
        if not path.is_file():
            return "no metrics.json"
        dropped = json.loads(path.read_text()).get("data", {}).get("dropped", {})
        short = {key: dropped.get(key) for key, value in expected.items() if (dropped.get(key) or 0) < value}
        if short:
            return f"metrics.json data.dropped has {short}, expected at least {expected}"
        if "data dropped" not in outcome.stdout:
            return "the run summary does not report the dropped data"
        return None

    check.__doc__ = "metrics.json data.dropped has " + ", ".join(f"{key} >= {value}" for key, value in expected.items())
    check.__doc__ += " and the run summary has a 'data dropped' line"
    return check


def no_run_folder(outcome: Outcome, work: Path) -> str | None:
    return f"it left the run folder {work / 'run'} behind" if (work / "run").exists() else None


def log_of(outcome: Outcome) -> str:
    return outcome.stdout + outcome.stderr


def same_as_reference(fx: Fixtures, run_dir: Path) -> str | None:
    reference = fx.reference()
    for name in ("metrics.json", "predictions.json"):
        if not (run_dir / name).is_file():
            return f"no {name}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    loss, reference_loss = metrics.get("loss"), expected.get("loss")
    if not isinstance(loss, float) or not isinstance(reference_loss, float):
        return f"loss {loss!r}, reference {reference_loss!r}"
    if abs(loss - reference_loss) > 1e-6 * abs(reference_loss):
        return f"metrics.json loss {loss} differs from the uninterrupted run's {reference_loss}"
    if json.loads((run_dir / "predictions.json").read_text()) != json.loads(
        (reference / "predictions.json").read_text()
    ):
        return "predictions.json differs from the uninterrupted run's"
    return None


def checkpoint_names(run_dir: Path) -> list[str]:
    return sorted(path.name for path in run_dir.glob("checkpoint-*"))


# --- cases ---------------------------------------------------------------------------------------------------------


def train_step(work: Path, overrides: tuple[str, ...], fast: bool = True) -> Step:
    return Step([PY, "train.py", *(FAST if fast else []), *overrides, f"hydra.run.dir={work / 'run'}"])


def config_case(name: str, *overrides: str, fast: bool = True) -> Case:
    return Case(name, "config", ERROR, lambda fx, work: train_step(work, overrides, fast), no_run_folder)


def config_with_root(name: str, *overrides: str) -> Case:
    """Overrides with `{root}`: a copy of the VQA v2 fixture."""

    def prepare(fx: Fixtures, work: Path) -> Step:
        root = fx.v2_copy(work)
        return train_step(work, tuple(o.format(root=root, work=work) for o in overrides))

    return Case(name, "config", ERROR, prepare, no_run_folder)


def config_cases() -> list[Case]:
    return [
        config_case("config: model=nope", "model=nope", fast=False),
        config_case("config: data=nope", "data=nope", fast=False),
        config_case("config: trainer=nope", "trainer=nope", fast=False),
        config_case("config: unknown key without + (trainer.args.foo=1)", "trainer.args.foo=1"),
        config_case("config: +trainer.args.foo=1", "+trainer.args.foo=1"),
        config_case("config: +trainer.args.learnin_rate=1 (typo)", "+trainer.args.learnin_rate=1"),
        config_case("config: learning_rate=abc", "trainer.args.learning_rate=abc"),
        config_case("config: max_steps=1.5", "trainer.args.max_steps=1.5"),
        config_case("config: bf16=maybe", "trainer.args.bf16=maybe"),
        config_case("config: per_device_train_batch_size=0", "trainer.args.per_device_train_batch_size=0"),
        config_case("config: per_device_train_batch_size=-4", "trainer.args.per_device_train_batch_size=-4"),
        config_case("config: num_train_epochs=abc", "trainer.args.num_train_epochs=abc"),
        config_case("config: eval_strategy=sometimes", "trainer.args.eval_strategy=sometimes"),
        config_case("config: lr_scheduler_type=nope", "trainer.args.lr_scheduler_type=nope"),
        config_case("config: model.fusion=x", "model.fusion=x"),
        config_case("config: model.freeze=x", "model.freeze=x"),
        config_case("config: model.inputs=x", "model.inputs=x"),
        config_case("config: eval_split=dev", "eval_split=dev"),
        config_case("config: feature_cache.dtype=int8", "feature_cache.dtype=int8"),
        config_case("config: data.max_questions=-5", "data.max_questions=-5"),
        config_case("config: data.max_questions=0", "data.max_questions=0"),
        config_case("config: data.validation_images=0", "data.validation_images=0"),
        config_case("config: data.missing_images=maybe", "data.missing_images=maybe"),
        config_case("config: trainer.questions_per_image=0", "trainer.questions_per_image=0"),
        config_case("config: trainer.num_beams=0", "trainer.num_beams=0"),
        config_case("config: trainer.group_by_image=maybe", "trainer.group_by_image=maybe"),
        config_case("config: seed=abc", "seed=abc"),
        config_case("config: experiment=vqa_v2_base without data.root", "experiment=vqa_v2_base"),
        config_with_root(
            "config: experiment=vqa_v2_base on a CPU host (tf32)", "experiment=vqa_v2_base", "data.root={root}"
        ),
        config_case("config: bad override syntax (model.fusion=[)", "model.fusion=["),
        config_with_root(
            "config: data=vqa_v2 data.root=<missing folder>", "data=vqa_v2", "data.root={work}/no-such-folder"
        ),
    ]


def v2_cli(root: Path, work: Path, *extra: str, split: str = "train2014") -> list[str]:
    return [PY, "-m", "vqa.data.vqa_v2", "--root", str(root), "--split", split, "--out", str(work / "cache"), *extra]


def data_case(
    name: str,
    damage: Callable[[Fixtures, Path], Any],
    *extra: str,
    expect: str = ERROR,
    check: Check | None = None,
) -> Case:
    def prepare(fx: Fixtures, work: Path) -> Step:
        root = fx.v2_copy(work)
        damage(fx, root)
        return Step(v2_cli(root, work, *extra))

    return Case(name, "data", expect, prepare, check)


def questions(root: Path) -> Path:
    return root / TRAIN_Q


def annotations(root: Path) -> Path:
    return root / TRAIN_A


def first_question(change: Callable[[dict[str, Any]], Any]) -> Callable[[Fixtures, Path], None]:
    return lambda fx, root: edit_json(questions(root), lambda content: change(content["questions"][0]))


def first_annotation(change: Callable[[dict[str, Any]], Any]) -> Callable[[Fixtures, Path], None]:
    return lambda fx, root: edit_json(annotations(root), lambda content: change(content["annotations"][0]))


def write_text(path_of: Callable[[Path], Path], text: str | bytes) -> Callable[[Fixtures, Path], None]:
    def damage(fx: Fixtures, root: Path) -> None:
        path = path_of(root)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return damage


def not_utf8(fx: Fixtures, root: Path) -> None:
    content = json.loads(questions(root).read_text())
    content["questions"][0]["question"] = "what café is this?"
    questions(root).write_bytes(json.dumps(content, ensure_ascii=False).encode("latin-1"))


def lone_surrogate_question(fx: Fixtures, root: Path) -> None:
    content = json.loads(questions(root).read_text())
    content["questions"][0]["question"] = "what is \ud800 this?"
    questions(root).write_text(json.dumps(content))  # ensure_ascii: written as the escape \ud800


def duplicate_question(fx: Fixtures, root: Path) -> None:
    edit_json(questions(root), lambda content: content["questions"].append(dict(content["questions"][0])))


def duplicate_annotation(fx: Fixtures, root: Path) -> None:
    edit_json(annotations(root), lambda content: content["annotations"].append(dict(content["annotations"][1])))


def drop_annotations_of_image(image_id: int) -> Callable[[Fixtures, Path], None]:
    def damage(fx: Fixtures, root: Path) -> None:
        def change(content: dict[str, Any]) -> None:
            content["annotations"] = [entry for entry in content["annotations"] if entry["image_id"] != image_id]

        edit_json(annotations(root), change)

    return damage


def annotations_of_other_questions(fx: Fixtures, root: Path) -> None:
    def change(content: dict[str, Any]) -> None:
        for entry in content["annotations"]:
            entry["question_id"] += 100000

    edit_json(annotations(root), change)


def image_damage(change: Callable[[Path], Any], image_id: int = 9) -> Callable[[Fixtures, Path], None]:
    return lambda fx, root: change(train_image(root, image_id))


def truncated_jpeg(path: Path) -> None:
    """A 256x256 noise JPEG cut in half: the header parses, the pixel data ends early."""
    Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(path, format="JPEG", quality=90)
    truncate(path)


def bomb_image(side: int) -> Callable[[Fixtures, Path], None]:
    return lambda fx, root: shutil.copyfile(fx.bomb(side), train_image(root))


def image_is_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def data_cases() -> list[Case]:
    skip = ("--missing-images", "skip")
    return [
        data_case("data: questions file missing", lambda fx, root: questions(root).unlink()),
        data_case("data: annotations file missing", lambda fx, root: annotations(root).unlink()),
        data_case("data: malformed JSON (questions cut short)", lambda fx, root: truncate(questions(root))),
        data_case("data: questions file not UTF-8 (latin-1)", not_utf8),
        data_case("data: wrong top-level type (a list)", write_text(questions, "[]")),
        data_case("data: question missing field image_id", first_question(lambda q: q.pop("image_id"))),
        data_case(
            "data: question_id is a string", first_question(lambda q: q.update(question_id=str(q["question_id"])))
        ),
        data_case("data: answers list of 9", first_annotation(lambda a: a["answers"].pop())),
        data_case("data: duplicate question_id", duplicate_question),
        data_case("data: duplicate annotation", duplicate_annotation),
        data_case("data: empty question text", first_question(lambda q: q.update(question="  "))),
        data_case("data: question text with a lone surrogate", lone_surrogate_question),
        data_case("data: image_id mismatch between files", first_annotation(lambda a: a.update(image_id=42))),
        data_case("data: no annotation matches any question", annotations_of_other_questions),
        data_case(
            "data: some questions without annotation (counted)",
            drop_annotations_of_image(42),
            expect=HANDLED,
            check=report_says(questions=4, questions_without_annotation=2),
        ),
        data_case(
            "data: wrong data_subtype (val2014 file as train2014)",
            lambda fx, root: edit_json(questions(root), lambda c: c.update(data_subtype="val2014")),
        ),
        data_case("data: missing image (policy error)", image_damage(Path.unlink)),
        data_case(
            "data: missing image (policy skip)",
            image_damage(Path.unlink),
            *skip,
            expect=HANDLED,
            check=report_says(questions=4, missing_image_files=1, questions_skipped_for_images=2),
        ),
        data_case("data: truncated JPEG (policy error)", image_damage(truncated_jpeg)),
        data_case(
            "data: truncated JPEG (policy skip)",
            image_damage(truncated_jpeg),
            *skip,
            expect=HANDLED,
            check=report_says(questions=4, undecodable_image_files=1, questions_skipped_for_images=2),
        ),
        data_case("data: random bytes .jpg", image_damage(lambda path: path.write_bytes(os.urandom(4096)))),
        data_case("data: zero-byte .jpg", image_damage(lambda path: path.write_bytes(b""))),
        data_case("data: decompression bomb 100 Mpx PNG (policy error)", bomb_image(10000)),
        data_case(
            "data: decompression bomb 100 Mpx PNG (policy skip)",
            bomb_image(10000),
            *skip,
            expect=HANDLED,
            check=report_says(questions=4, oversized_image_files=1),
        ),
        data_case("data: decompression bomb 196 Mpx PNG (over twice the limit)", bomb_image(14000)),
        data_case("data: image folder missing", lambda fx, root: shutil.rmtree(root / "train2014")),
        data_case("data: --max-questions -1", lambda fx, root: None, "--max-questions", "-1"),
        Case(
            "data: --split misspelt (train2104)",
            "data",
            ERROR,
            lambda fx, work: Step(v2_cli(fx.v2_copy(work), work, split="train2104")),
        ),
    ]


def train_v2_case(
    name: str, damage: Callable[[Fixtures, Path], Any], *overrides: str, check: Check | None = None
) -> Case:
    def prepare(fx: Fixtures, work: Path) -> Step:
        root = fx.v2_copy(work)
        damage(fx, root)
        settings = ("data=vqa_v2", f"data.root={root}", f"data.cache_dir={work / 'cache'}", "data.minival_images=1")
        return train_step(work, (*settings, *overrides))

    return Case(name, "data (train.py)", HANDLED if check else ERROR, prepare, check or no_run_folder)


def train_v2_cases() -> list[Case]:
    skip = "data.missing_images=skip"
    return [
        train_v2_case(
            "train.py v2: missing image (policy skip)",
            image_damage(Path.unlink),
            skip,
            check=metrics_dropped(missing_image_files=1, questions_skipped_for_images=2),
        ),
        train_v2_case(
            "train.py v2: truncated JPEG (policy skip)",
            image_damage(truncated_jpeg),
            skip,
            check=metrics_dropped(undecodable_image_files=1, questions_skipped_for_images=2),
        ),
        train_v2_case(
            "train.py v2: minival_images larger than the split", lambda fx, root: None, "data.minival_images=2000"
        ),
    ]


def results_case(name: str, content: str | bytes | Callable[[list[dict[str, Any]]], Any] | None) -> Case:
    """`content`: the results file's text, or a change to a correct results list; None: no file."""

    def prepare(fx: Fixtures, work: Path) -> Step:
        root = fx.v2_pristine()
        work.mkdir(parents=True, exist_ok=True)
        results = work / "results.json"
        correct = [
            {"question_id": entry["question_id"], "answer": entry["multiple_choice_answer"]}
            for entry in json.loads((root / VAL_A).read_text())["annotations"]
        ]
        if callable(content):
            replaced = content(correct)
            results.write_text(json.dumps(correct if replaced is None else replaced))
        elif content is not None:
            results.write_bytes(content if isinstance(content, bytes) else content.encode())
        return Step(
            [
                PY,
                "-m",
                "vqa.evaluation.score_files",
                "--questions",
                str(root / VAL_Q),
                "--annotations",
                str(root / VAL_A),
                "--results",
                str(results),
            ]
        )

    return Case(name, "results", ERROR, prepare)


def results_cases() -> list[Case]:
    def first(change: Callable[[dict[str, Any]], Any]) -> Callable[[list[dict[str, Any]]], None]:
        def apply(results: list[dict[str, Any]]) -> None:
            change(results[0])  # in place; what it returns (a popped value) is not a replacement

        return apply

    return [
        results_case("results: not a list (an object)", '{"results": []}'),
        results_case("results: entry not an object", lambda results: [*results[1:], "70 thing"]),
        results_case("results: missing answer", first(lambda entry: entry.pop("answer"))),
        results_case("results: question_id is a string", first(lambda entry: entry.update(question_id="70"))),
        results_case("results: duplicate result", lambda results: [*results, dict(results[0])]),
        results_case("results: missing results for some questions", lambda results: results[:2]),
        results_case("results: extra results", lambda results: [*results, {"question_id": 12345, "answer": "x"}]),
        results_case("results: malformed JSON", '[{"question_id": 70, "answer": "thing 7"'),
        results_case("results: empty file", b""),
        results_case("results: file missing", None),
    ]


def predict_step(checkpoint: Path, image: Path, *extra: str, question: str = QUESTION) -> Step:
    argv = [
        PY,
        "-m",
        "vqa.inspection.predict",
        "--checkpoint",
        str(checkpoint),
        "--image",
        str(image),
        "--question",
        question,
    ]
    return Step([*argv, *extra])


def checkpoint_case(
    name: str,
    damage: Callable[[Path], Any] | None,
    *extra: str,
    question: str = QUESTION,
    expect: str = ERROR,
    check: Check | None = None,
) -> Case:
    """`damage` changes a copy of the debug=fast run's checkpoint/ folder."""

    def prepare(fx: Fixtures, work: Path) -> Step:
        checkpoint = work / "checkpoint"
        shutil.copytree(fx.fast_run() / "checkpoint", checkpoint)
        if damage is not None:
            damage(checkpoint)
        return predict_step(checkpoint, fx.image(), *extra, question=question)

    return Case(name, "checkpoint", expect, prepare, check, needs=("fast_run",))


def warns_about(*words: str) -> Check:
    def check(outcome: Outcome, work: Path) -> str | None:
        said = [line for line in outcome.stderr.splitlines() if all(word in line for word in words)]
        return None if said else f"no stderr line names {' and '.join(map(repr, words))}"

    check.__doc__ = f"a stderr line names {' and '.join(map(repr, words))}"
    return check


def image_case(name: str, write: Callable[[Path, Path], Any], *extra: str, question: str = QUESTION) -> Case:
    """`write(path, good_image)` makes the image file (or not)."""

    def prepare(fx: Fixtures, work: Path) -> Step:
        work.mkdir(parents=True, exist_ok=True)
        image = work / "image.png"
        write(image, fx.image())
        return predict_step(fx.fast_run() / "checkpoint", image, *extra, question=question)

    return Case(name, "checkpoint", ERROR, prepare, needs=("fast_run",))


def remove(name: str) -> Callable[[Path], None]:
    def damage(checkpoint: Path) -> None:
        path = checkpoint / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return damage


def replace_file(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda checkpoint: (checkpoint / name).write_bytes(content)


def scramble(name: str) -> Callable[[Path], None]:
    def damage(checkpoint: Path) -> None:
        path = checkpoint / name
        path.write_bytes(os.urandom(path.stat().st_size))

    return damage


def copy_image(path: Path, good: Path) -> None:
    shutil.copyfile(good, path)


def checkpoint_cases() -> list[Case]:
    return [
        Case(
            "checkpoint: folder missing",
            "checkpoint",
            ERROR,
            lambda fx, work: predict_step(work / "no-such-checkpoint", fx.image()),
        ),
        Case(
            "checkpoint: the run folder instead of checkpoint/",
            "checkpoint",
            ERROR,
            lambda fx, work: predict_step(fx.fast_run(), fx.image()),
            needs=("fast_run",),
        ),
        checkpoint_case("checkpoint: no config.json", remove("config.json")),
        checkpoint_case("checkpoint: no model.safetensors", remove("model.safetensors")),
        checkpoint_case("checkpoint: truncated model.safetensors", lambda c: truncate(c / "model.safetensors")),
        checkpoint_case("checkpoint: model.safetensors random bytes", scramble("model.safetensors")),
        checkpoint_case("checkpoint: no question tokenizer", remove("question_tokenizer")),
        checkpoint_case("checkpoint: no answer tokenizer", remove("answer_tokenizer")),
        checkpoint_case("checkpoint: corrupt vqa_processor.json", lambda c: truncate(c / "vqa_processor.json")),
        checkpoint_case(
            "checkpoint: vqa_processor.json is {}",
            replace_file("vqa_processor.json", b"{}"),
            expect=EITHER,  # refused, or loaded with its defaults and a warning that says so
            check=warns_about("vqa_processor.json"),
        ),
        checkpoint_case(
            "checkpoint: vqa_processor.json with an unknown key",
            replace_file(
                "vqa_processor.json", b'{"max_question_length": 32, "max_answer_length": 8, "lowercase": true}'
            ),
        ),
        image_case("predict: image file missing", lambda path, good: None),
        image_case("predict: image is not an image", lambda path, good: path.write_bytes(os.urandom(3000))),
        image_case(
            "predict: image truncated",
            lambda path, good: path.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
        ),
        image_case("predict: empty question", copy_image, question=" "),
        image_case("predict: --top-k 0", copy_image, "--top-k", "0"),
    ]


# resume --------------------------------------------------------------------------------------------------------------


def copy_reference(fx: Fixtures, work: Path) -> Path:
    run_dir = work / "run"
    shutil.copytree(fx.reference(), run_dir)
    return run_dir


def resume_case(
    name: str, damage: Callable[[Path], Any], *overrides: str, expect: str = ERROR, check: Check | None = None
) -> Case:
    """`damage` changes a copy of the reference run (checkpoint-2, checkpoint-4, finished)."""

    def prepare(fx: Fixtures, work: Path) -> Step:
        run_dir = copy_reference(fx, work)
        damage(run_dir)
        return Step([PY, "train.py", f"resume={run_dir}", *overrides])

    return Case(name, "resume", expect, prepare, check, needs=("reference",))


def falls_back(fx: Fixtures) -> Check:
    """Resumed from checkpoint-2 with a line naming the skipped checkpoint-4, and the reference's result."""

    def check(outcome: Outcome, work: Path) -> str | None:
        """the log names 'skipped checkpoint-4', steps 3-4 are trained again, metrics.json loss and
        predictions.json equal the uninterrupted run's"""
        log = log_of(outcome)
        if "skipped checkpoint-4" not in log:
            return "no 'skipped checkpoint-4' in the log"
        if "'loss'" not in outcome.stdout:
            return "no training step was logged (steps 3 and 4 should be trained again)"
        return same_as_reference(fx, work / "run")

    return check


def damage_newest(name: str, how: Callable[[Path], Any]) -> Callable[[Path], None]:
    return lambda run_dir: how(run_dir / "checkpoint-4" / name)


def resume_cases(fx: Fixtures) -> list[Case]:
    def finished(outcome: Outcome, work: Path) -> str | None:
        """'training is over' logged, no training step, checkpoints unchanged, result equal to the
        uninterrupted run's"""
        run_dir = work / "run"
        if "training is over" not in log_of(outcome):
            return "no 'training is over' in the log"
        if "'loss'" in outcome.stdout:
            return "it trained again"
        if checkpoint_names(run_dir) != ["checkpoint-2", "checkpoint-4"]:
            return f"checkpoints are now {checkpoint_names(run_dir)}"
        return same_as_reference(fx, run_dir)

    def extended(outcome: Outcome, work: Path) -> str | None:
        """config.yaml has max_steps 6, .hydra/overrides.yaml ends with the override, checkpoint-6 was written"""
        import yaml

        run_dir = work / "run"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        if config["trainer"]["args"]["max_steps"] != 6:
            return f"config.yaml has max_steps {config['trainer']['args']['max_steps']}"
        if not overrides or overrides[-1] != "trainer.args.max_steps=6":
            return f".hydra/overrides.yaml is {overrides}"
        if "checkpoint-6" not in checkpoint_names(run_dir):
            return f"no checkpoint-6 ({checkpoint_names(run_dir)})"
        return None

    def left_as_it_was(outcome: Outcome, work: Path) -> str | None:
        run_dir = work / "run"
        if (run_dir / "config.yaml").read_text() != (fx.reference() / "config.yaml").read_text():
            return "config.yaml was changed"
        if checkpoint_names(run_dir) != ["checkpoint-2", "checkpoint-4"] or not (run_dir / "metrics.json").is_file():
            return "the run folder was changed"
        return None

    def both_checkpoints(how: Callable[[Path], Any]) -> Callable[[Path], None]:
        def damage(run_dir: Path) -> None:
            for step in (2, 4):
                how(run_dir / f"checkpoint-{step}")

        return damage

    def not_a_run(fx: Fixtures, work: Path) -> Step:
        (work / "not-a-run").mkdir(parents=True)
        return Step([PY, "train.py", f"resume={work / 'not-a-run'}"])

    def misspelt(fx: Fixtures, work: Path) -> Step:
        work.mkdir(parents=True, exist_ok=True)
        return Step([PY, "train.py", f"resume={work / 'no-such-run'}"])

    def no_folder_left(outcome: Outcome, work: Path) -> str | None:
        return "it left the misspelt folder behind" if (work / "no-such-run").exists() else None

    def without_checkpoints(fx: Fixtures, work: Path) -> Step:
        run_dir = work / "run"
        shutil.copytree(fx.fast_run(), run_dir)
        return Step([PY, "train.py", f"resume={run_dir}"])

    return [
        Case("resume: a folder that is not a run", "resume", ERROR, not_a_run),
        Case("resume: misspelt path", "resume", ERROR, misspelt, no_folder_left),
        Case("resume: a run without any checkpoint-N", "resume", ERROR, without_checkpoints, needs=("fast_run",)),
        resume_case(
            "resume: config.yaml damaged", lambda run_dir: (run_dir / "config.yaml").write_text("model: [unclosed\n")
        ),
        resume_case(
            "resume: newest checkpoint without checkpoint_complete.json",
            damage_newest("checkpoint_complete.json", Path.unlink),
            expect=HANDLED,
            check=falls_back(fx),
        ),
        resume_case(
            "resume: no checkpoint has checkpoint_complete.json",
            both_checkpoints(lambda folder: (folder / "checkpoint_complete.json").unlink()),
        ),
        resume_case(
            "resume: truncated model.safetensors in the newest checkpoint",
            damage_newest("model.safetensors", truncate),
            expect=HANDLED,
            check=falls_back(fx),
        ),
        resume_case(
            "resume: truncated optimizer.pt in the newest checkpoint",
            damage_newest("optimizer.pt", truncate),
            expect=HANDLED,
            check=falls_back(fx),
        ),
        resume_case(
            "resume: missing trainer_state.json in the newest checkpoint",
            damage_newest("trainer_state.json", Path.unlink),
            expect=HANDLED,
            check=falls_back(fx),
        ),
        resume_case(
            "resume: all checkpoints damaged",
            both_checkpoints(lambda folder: truncate(folder / "model.safetensors")),
        ),
        resume_case(
            "resume: refused overrides (model.fusion=pooled seed=3)",
            lambda run_dir: None,
            "model.fusion=pooled",
            "seed=3",
            check=left_as_it_was,
        ),
        resume_case(
            "resume: allowed override (trainer.args.max_steps=6)",
            lambda run_dir: None,
            "trainer.args.max_steps=6",
            expect=HANDLED,
            check=extended,
        ),
        resume_case("resume: a finished run", lambda run_dir: None, expect=HANDLED, check=finished),
    ]


def kill_case(fx: Fixtures, name: str, hook: str, pattern: str, final_write: bool = False) -> Case:
    """Train with a kill hook (SIGKILL in the middle of one write), then resume; the result must equal the reference."""

    def prepare(fx: Fixtures, work: Path) -> Step:
        run_dir = work / "run"
        env = {"PYTHONPATH": str(fx.hooks()), "FAULT_SURVEY_KILL": f"{hook}:{pattern}"}
        argv = [PY, "train.py", *SAVING, f"hydra.run.dir={run_dir}"]
        killed = fx.run(argv, env, timeout=DEFAULT_TIMEOUT)
        setup = f"{shlex.join(f'{k}={v}' for k, v in env.items())} {shlex.join(argv)} -> exit {killed.exit_status}"
        step = Step([PY, "train.py", f"resume={run_dir}"], setup=setup)
        if killed.exit_status != -9:
            step.not_measured = f"the kill hook did not fire (exit {killed.exit_status}): {killed.stderr[-300:]}"
        return step

    def check(outcome: Outcome, work: Path) -> str | None:
        """the resumed run skips the half-written checkpoint (or finds training over), leaves no staging
        folder, and its metrics.json loss and predictions.json equal the uninterrupted run's"""
        run_dir = work / "run"
        log = log_of(outcome)
        if final_write:
            if "training is over" not in log:
                return "no 'training is over' in the log"
            leftovers = [path.name for path in run_dir.glob(".checkpoint*")]
            if leftovers:
                return f"staging folders left behind: {leftovers}"
            if not (run_dir / "checkpoint" / "model.safetensors").is_file():
                return "no checkpoint/model.safetensors"
        elif "skipped checkpoint-4" not in log:
            return "no 'skipped checkpoint-4' in the log"
        return same_as_reference(fx, run_dir)

    return Case(name, "kill -9", HANDLED, prepare, check, needs=("reference",))


def cache_kill_case(name: str, hook: str, pattern: str) -> Case:
    """Build a VQA v2 split with a kill hook, then build again: the rebuild must work and leave no staging folder."""

    def prepare(fx: Fixtures, work: Path) -> Step:
        root = fx.v2_copy(work)
        env = {"PYTHONPATH": str(fx.hooks()), "FAULT_SURVEY_KILL": f"{hook}:{pattern}"}
        argv = v2_cli(root, work)
        killed = fx.run(argv, env)
        partial = sorted(path.name for path in (work / "cache").glob(".*.partial-*"))
        setup = (
            f"{shlex.join(f'{k}={v}' for k, v in env.items())} {shlex.join(argv)} -> exit {killed.exit_status}, "
            f"left {partial}"
        )
        step = Step(argv, setup=setup)
        if killed.exit_status != -9:
            step.not_measured = f"the kill hook did not fire (exit {killed.exit_status}): {killed.stderr[-300:]}"
        elif not partial:
            step.not_measured = "the killed build left no .partial- staging folder to clean up"
        return step

    def check(outcome: Outcome, work: Path) -> str | None:
        """the rebuild succeeds, the killed build's staging folder is gone, one cache folder with all 6 questions"""
        cache = work / "cache"
        leftovers = sorted(path.name for path in cache.glob(".*.partial-*"))
        if leftovers:
            return f"staging folders left after the rebuild: {leftovers}"
        built = sorted(path.name for path in cache.glob("vqa_v2-train2014-*"))
        if len(built) != 1:
            return f"cache folders after the rebuild: {built}"
        return report_says(questions=6, images=3)(outcome, work)

    return Case(name, "kill -9", HANDLED, prepare, check)


def kill_cases(fx: Fixtures) -> list[Case]:
    return [
        kill_case(
            fx, "kill -9: writing checkpoint-4/optimizer.pt, then resume", "torch_save", r"checkpoint-4/optimizer\.pt$"
        ),
        kill_case(
            fx,
            "kill -9: writing checkpoint-4/model.safetensors, then resume",
            "safetensors",
            r"checkpoint-4/model\.safetensors$",
        ),
        kill_case(
            fx,
            "kill -9: writing checkpoint-4/trainer_state.json, then resume",
            "trainer_state",
            r"checkpoint-4/trainer_state\.json$",
        ),
        kill_case(
            fx,
            "kill -9: writing the final checkpoint/ folder, then resume",
            "safetensors",
            r"/\.checkpoint\.partial-[^/]*/model\.safetensors$",
            final_write=True,
        ),
        cache_kill_case("kill -9: dataset cache build before publishing, then rebuild", "publish", r"\.partial-"),
        cache_kill_case(
            "kill -9: dataset cache build mid Arrow write, then rebuild", "arrow_write", r"\.partial-.*\.arrow$"
        ),
    ]


def cli_cases() -> list[Case]:
    def sweep(make: Callable[[Path], Path]) -> Callable[[Fixtures, Path], Step]:
        def prepare(fx: Fixtures, work: Path) -> Step:
            work.mkdir(parents=True, exist_ok=True)
            return Step([PY, "-m", "vqa.inspection.sweep_report", str(make(work))])

        return prepare

    def broken_run(work: Path) -> Path:
        (work / "sweep" / "0" / ".hydra").mkdir(parents=True)
        (work / "sweep" / "0" / ".hydra" / "overrides.yaml").write_text("- model.fusion=pooled\n")
        (work / "sweep" / "0" / "metrics.json").write_text("{")
        return work / "sweep"

    return [
        Case(
            "sweep_report: malformed metrics.json",
            "cli",
            EITHER,  # refused, or the run listed without metrics and the file named
            sweep(broken_run),
            warns_about("metrics.json", "unreadable"),
        ),
    ]


def all_cases(fx: Fixtures) -> list[Case]:
    return [
        *config_cases(),
        *data_cases(),
        *train_v2_cases(),
        *results_cases(),
        *checkpoint_cases(),
        *resume_cases(fx),
        *kill_cases(fx),
        *cli_cases(),
    ]


# --- running -------------------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:80]


def run_case(fx: Fixtures, case: Case) -> dict[str, Any]:
    work = fx.tmp / "cases" / slug(case.name)
    work.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"name": case.name, "category": case.category, "expected": case.expect}
    try:
        step = case.prepare(fx, work)
    except Exception as error:  # a failed fixture (or a bug here): the case is not measured, the survey goes on
        detail = str(error) if isinstance(error, FixtureError) else f"could not prepare the case: {error!r}"
        return {**record, "command": "", "exit_status": None, "outcome": "other", "detail": detail, "stderr_tail": ""}
    record["command"] = " ".join(
        [*(f"{key}={shlex.quote(value)}" for key, value in step.env.items()), shlex.join(step.argv)]
    )
    if step.setup:
        record["setup"] = step.setup
    if step.not_measured:
        return {**record, "exit_status": None, "outcome": "other", "detail": step.not_measured, "stderr_tail": ""}
    outcome = fx.run(step.argv, step.env, step.timeout)
    verdict, detail = classify(case, outcome, work)
    tail = outcome.stderr.strip()[-1500:]
    return {
        **record,
        "exit_status": outcome.exit_status,
        "outcome": verdict,
        "detail": detail,
        "seconds": round(outcome.seconds, 1),
        "stderr_tail": tail,
    }


def hide_tmp(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace(str(tmp), "<tmp>")
    if isinstance(value, dict):
        return {key: hide_tmp(item, tmp) for key, item in value.items()}
    if isinstance(value, list):
        return [hide_tmp(item, tmp) for item in value]
    return value


def print_table(records: list[dict[str, Any]]) -> None:
    width = max(len(record["name"]) for record in records)
    print(f"{'case':<{width}}  {'exit':>5}  {'outcome':<15} detail")
    for record in records:
        status = "" if record["exit_status"] is None else str(record["exit_status"])
        detail = " ".join(str(record.get("detail", "")).split())[:110]
        print(f"{record['name']:<{width}}  {status:>5}  {record['outcome']:<15} {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fault_survey.json")
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)
    LOG_FORMATS[:] = vqa_log_formats()

    tmp = Path(tempfile.mkdtemp(prefix="fault-survey-"))
    fx = Fixtures(tmp)
    cases = [case for case in all_cases(fx) if not args.only or args.only in case.name]
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise SystemExit("error: duplicate case names")
    if not cases:
        raise SystemExit(f"error: --only {args.only!r} matches no case")
    start = time.perf_counter()
    try:
        fx.prepare_needed({name for case in cases for name in case.needs})
        # Longest first (training runs), so that the two workers finish together.
        order = sorted(cases, key=lambda case: case.category not in ("resume", "kill -9", "data (train.py)"))
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            futures = {case.name: pool.submit(run_case, fx, case) for case in order}
            records = []
            for case in cases:
                record = futures[case.name].result()
                records.append(hide_tmp(record, tmp))
                print(f"[{time.perf_counter() - start:6.0f} s] {record['outcome']:<15} {case.name}", flush=True)
    finally:
        if args.keep:
            print(f"temporary folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    counts = Counter(record["outcome"] for record in records)
    result = {
        "cases": records,
        "counts": {outcome: counts.get(outcome, 0) for outcome in OUTCOMES},
        "total": len(records),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "cpus": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "provenance": provenance(ROOT),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print()
    print_table(records)
    print()
    print("counts: " + ", ".join(f"{outcome} {count}" for outcome, count in result["counts"].items()))
    print(f"{len(records)} cases in {result['wall_seconds']:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
