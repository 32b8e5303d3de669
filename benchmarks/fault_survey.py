"""Fault survey: bad inputs and faults through the real entry points, each outcome classified.

    .venv/bin/python benchmarks/fault_survey.py [--out benchmarks/results/fault_survey.json] [--only SUBSTRING] [--keep]

A measurement, not a test: it makes its fixtures in a temporary folder (tiny official-format VQA v2 files with
COCO-named JPEGs from `tests/vqa_v2_fixture.py`, decompression-bomb PNGs, two short easy-VQA training runs: a plain
`debug=fast` run for its `checkpoint/` and a run that saves `checkpoint-2` and `checkpoint-4` for the resume cases; a
module of misbehaving RL rewards put on the subprocess's PYTHONPATH; random-init DistilBERT, T5, ViT, Swin and GPT-2
folders written with `save_pretrained`), runs every case as a subprocess of `train.py` or a `python -m vqa....` CLI (two
at a time), and writes `{"cases": [...], "counts": {outcome: n}}` plus a table on stdout. Each case records its name,
category, command (with the temporary folder written as `<tmp>`), exit status, outcome, stderr tail, what it expected
and why it got its outcome (`detail`). Subprocesses run offline: HF_HUB_OFFLINE=1, WANDB_MODE=disabled, VQA_CACHE and
VQA_FEATURE_CACHE in the temporary folder, OMP_NUM_THREADS=1 (two cases share the two cores). Config cases add
`debug=fast` (unless they name a config group option), so a bad setting that is accepted trains for four steps, not for
the default 12 epochs. `--only` runs the cases whose name contains the text (give it another `--out` to keep the full
survey's file); `--keep` keeps the temporary folder.

What a case can arrange around its command: arguments that are bytes (not UTF-8; the record shows them with
backslash escapes); a `sitecustomize` on PYTHONPATH that kills the process with SIGKILL in the middle of a write or
as a training step begins, or records the pixel values `VQAProcessor` hands the model (what predict made of an
image file); another command started beside it (two runs in one folder: the one refused is the one classified);
resources held open while it runs (a listening socket on the port the demo is given), released afterwards.

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
  A case may also check what the failed command left behind or said (e.g. a misspelt `resume=` path must leave no
  folder, a refused override must leave the run as it was, a diverged run must leave no checkpoint of non-finite
  weights and name the step); a failed post-check makes the case `other`, with the reason.
  A case that expected `handled` but got such an error is still `one_line_error`; its detail says so.
- `handled`: exit status 0 and the case's own check found the expected evidence (a count in the build report or
  metrics.json, a "skipped checkpoint-4" log line, metrics and predictions equal to an uninterrupted run, ...).
- `silently_wrong`: exit status 0, but either the case expected a refusal (the bad input was accepted; the detail
  adds what its post-check found, e.g. NaN weights) or the case's check found the result wrong or unreported.
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
# Categories whose cases train (run first, so that the two workers finish together).
LONG_CATEGORIES = ("resume", "kill -9", "data (train.py)", "run_folder", "divergence", "rewards", "init_from")

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
    """The command a case measures, and what was done before it.

    `argv` items may be bytes (an argument that is not valid UTF-8). `background` commands were started by the
    case's preparation and run beside the measured one; `cleanup` callables (closing a socket the case holds
    open, ...) run after it, whatever happened. `pick`, given the measured command's outcome, returns the outcome
    to classify (e.g. whichever of two identical commands was refused)."""

    argv: list[str | bytes]
    env: dict[str, str] = field(default_factory=dict)
    setup: str = ""
    timeout: int = DEFAULT_TIMEOUT
    not_measured: str | None = None  # the setup did not produce the fault (e.g. a kill hook that did not fire)
    background: list[Background] = field(default_factory=list)
    cleanup: list[Callable[[], Any]] = field(default_factory=list)
    pick: Callable[[Outcome], Outcome] | None = None


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


def run_check(check: Check, outcome: Outcome, work: Path) -> str | None:
    try:
        return check(outcome, work)
    except Exception as error:  # a check that cannot read what it looks for has found it wrong
        return f"the check could not run: {error!r}"


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
        problem = run_check(case.check, outcome, work) if (case.check and case.expect == ERROR) else None
        if problem:
            return "other", f"one-line error, but {problem}"
        expected = "(expected handled) " if case.expect == HANDLED else ""
        return "one_line_error", expected + lines[0][:200]
    if outcome.exit_status == 0:
        if case.expect == ERROR:
            said = [line.strip() for line in outcome.stdout.splitlines() if line.strip()][-2:]
            detail = f"exit 0: the bad input was accepted without an error (stdout ends {said})"
            problem = run_check(case.check, outcome, work) if case.check else None
            return "silently_wrong", detail + (f"; and {problem}" if problem else "")
        problem = run_check(case.check, outcome, work) if case.check else None
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

    def run(
        self, argv: list[str | bytes], env: dict[str, str] | None = None, timeout: int = DEFAULT_TIMEOUT
    ) -> Outcome:
        start = time.perf_counter()
        try:
            done = subprocess.run(
                argv,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                capture_output=True,
                text=True,
                errors="replace",  # a child that echoes a non-UTF-8 argument
                timeout=timeout,
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


class Background:
    """A command started by a case's preparation, running beside the measured one; stopped (by its own process id)
    after the case if still running."""

    def __init__(self, fx: Fixtures, argv: list[str | bytes], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self._start = time.perf_counter()
        self._outcome: Outcome | None = None
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**fx.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )

    def wait(self, timeout: int = DEFAULT_TIMEOUT) -> Outcome:
        if self._outcome is None:
            try:
                stdout, stderr = self.process.communicate(timeout=timeout)
                status: int | None = self.process.returncode
            except subprocess.TimeoutExpired:
                self.process.kill()
                stdout, stderr = self.process.communicate()
                status = None
            self._outcome = Outcome(status, stdout, stderr, time.perf_counter() - self._start)
        return self._outcome

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


def shown(arg: str | bytes) -> str:
    """An argument as the record shows it: bytes that are not UTF-8 as backslash escapes."""
    return arg.decode("utf-8", errors="backslashreplace") if isinstance(arg, bytes) else arg


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
    elif _HOOK == "step_begin":  # the pattern is a step number: killed as training starts the step after it
        from transformers import trainer_callback

        _on_step_begin = trainer_callback.CallbackHandler.on_step_begin

        def _on_step_begin_or_die(self, args, state, control):
            if state.global_step == int(_PATTERN):
                _die()
            return _on_step_begin(self, args, state, control)

        trainer_callback.CallbackHandler.on_step_begin = _on_step_begin_or_die

# FAULT_SURVEY_RECORD_PIXELS=<file.npy>: the first image that VQAProcessor turns into pixel_values is saved there
# as (H, W, 3) values on the 0-255 scale (the image processor's normalisation undone): what the model saw.
_RECORD = os.environ.get("FAULT_SURVEY_RECORD_PIXELS")
if _RECORD:
    import numpy

    from vqa.model import processing as _processing

    _call = _processing.VQAProcessor.__call__

    def _call_and_record(self, *args, **kwargs):
        batch = _call(self, *args, **kwargs)
        if not os.path.exists(_RECORD) and "pixel_values" in batch:
            pixels = batch["pixel_values"][0].detach().float().cpu().numpy()  # (3, H, W)
            mean = numpy.asarray(getattr(self.image_processor, "image_mean", None) or [0.5] * 3).reshape(3, 1, 1)
            std = numpy.asarray(getattr(self.image_processor, "image_std", None) or [0.5] * 3).reshape(3, 1, 1)
            numpy.save(_RECORD, ((pixels * std + mean) * 255.0).transpose(1, 2, 0))
        return batch

    _processing.VQAProcessor.__call__ = _call_and_record
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


# resume ---------------------------------------------------------------------------------------------------------------


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


# --- the kinds: divergence, run folders, image modes, init_from, options, encoders, rewards, services ---------

# Rewards for objective=rl, importable from the folder `Fixtures.reward_module` puts on PYTHONPATH.
REWARDS_MODULE = "survey_rewards"
REWARDS = """
def nan_reward(*, questions, images, answers, human_answers):
    return [float("nan")] * len(answers)


def wrong_count_reward(*, questions, images, answers, human_answers):
    return [1.0] * (len(answers) + 1)


def string_reward(*, questions, images, answers, human_answers):
    return "good"


def none_reward(*, questions, images, answers, human_answers):
    return None
"""


def reward_module(fx: Fixtures) -> Path:
    def make() -> Path:
        folder = fx.tmp / "rewards"
        folder.mkdir()
        (folder / f"{REWARDS_MODULE}.py").write_text(REWARDS)
        return folder

    return fx.once("rewards", make)


def rl_step(fx: Fixtures, work: Path, reward: str | None, *overrides: str) -> Step:
    """objective=rl from the debug=fast run, with `reward` (a function of REWARDS) as objective.reward."""
    chosen = (f"objective.reward._target_={REWARDS_MODULE}.{reward}",) if reward else ()
    step = train_step(work, ("objective=rl", f"init_from={fx.fast_run()}", *chosen, *overrides))
    step.env = {"PYTHONPATH": str(reward_module(fx))}
    return step


def the_error_line(outcome: Outcome) -> str:
    lines = counted_lines(outcome.stderr)
    return lines[-1] if lines else ""


def line_names(*alternatives: tuple[str, ...]) -> Check:
    """The error line names one word of each group (case-insensitive)."""

    def check(outcome: Outcome, work: Path) -> str | None:
        line = the_error_line(outcome).lower()
        missing = [" or ".join(map(repr, group)) for group in alternatives if not any(w.lower() in line for w in group)]
        return f"the error line does not name {' nor '.join(missing)}" if missing else None

    check.__doc__ = "the error line names " + " and ".join(" or ".join(map(repr, group)) for group in alternatives)
    return check


def both(*checks: Check) -> Check:
    def check(outcome: Outcome, work: Path) -> str | None:
        return next((problem for one in checks if (problem := one(outcome, work))), None)

    check.__doc__ = "; ".join(one.__doc__ or "" for one in checks)
    return check


def finite_checkpoints(outcome: Outcome, work: Path) -> str | None:
    """every checkpoint*/model.safetensors in the run folder holds finite weights only"""
    import torch
    from safetensors.torch import load_file

    bad = []
    for path in sorted((work / "run").glob("checkpoint*/model.safetensors")):
        tensors = load_file(path)
        count = sum(1 for t in tensors.values() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
        if count:
            bad.append(f"{path.parent.name}/model.safetensors ({count} of {len(tensors)} tensors non-finite)")
    return f"non-finite weights left in {', '.join(bad)}" if bad else None


def divergence_case(
    name: str, quantities: tuple[str, ...], make: Callable[[Fixtures, Path], Step], needs: tuple[str, ...] = ()
) -> Case:
    """Training that goes non-finite: one line naming the step, the quantity and the last good checkpoint (or that
    there is none), and no checkpoint with non-finite weights left behind."""
    check = both(line_names(("step",), quantities, ("checkpoint",)), finite_checkpoints)
    return Case(name, "divergence", ERROR, make, check, needs=needs)


def divergence_cases() -> list[Case]:
    saving = SAVING[2:]  # save every two steps, so that a checkpoint of non-finite weights could be written
    return [
        divergence_case(
            "divergence: objective=rl with a reward that returns NaN",
            ("reward",),
            lambda fx, work: rl_step(fx, work, "nan_reward", *saving),
            needs=("fast_run",),
        ),
        divergence_case(
            "divergence: learning_rate=1e30 without gradient clipping",
            ("loss", "grad_norm", "gradient", "weight"),
            lambda fx, work: train_step(
                work, (*saving, "trainer.args.learning_rate=1e30", "trainer.args.max_grad_norm=0")
            ),
        ),
    ]


def file_digests(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    import hashlib

    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in skip
    }


def run_folder_cases(fx: Fixtures) -> list[Case]:
    others: dict[Path, Outcome] = {}
    before: dict[Path, dict[str, str]] = {}
    log = "train.log"  # a refused run's log lines may be appended there

    def same_time(fx: Fixtures, work: Path) -> Step:
        work.mkdir(parents=True, exist_ok=True)
        step = train_step(work, ())
        first = Background(fx, step.argv)
        step.background.append(first)
        step.setup = f"the same command started beside it: {shlex.join(map(shown, step.argv))}"

        def pick(outcome: Outcome) -> Outcome:
            other = first.wait()
            if outcome.exit_status == 0 and other.exit_status != 0:  # the first one was refused: measure it
                others[work] = outcome
                return other
            others[work] = other
            return outcome

        step.pick = pick
        return step

    def other_finished(outcome: Outcome, work: Path) -> str | None:
        """the other run finished (exit 0) and the folder holds its metrics.json, predictions.json and checkpoint/"""
        other = others.get(work)
        if outcome.exit_status == 0:
            return f"both runs wrote into one folder (the other exited {other and other.exit_status})"
        if other is None or other.exit_status != 0:
            return f"the other run did not finish either (exit {other and other.exit_status})"
        run_dir = work / "run"
        missing = [n for n in ("metrics.json", "predictions.json", "checkpoint") if not (run_dir / n).exists()]
        return f"the finished run's folder lacks {missing}" if missing else None

    def into_finished(fx: Fixtures, work: Path) -> Step:
        shutil.copytree(fx.fast_run(), work / "run")
        before[work] = file_digests(work / "run", skip=(log,))
        return train_step(work, ())

    def left_as_it_was(outcome: Outcome, work: Path) -> str | None:
        """the finished run's files (train.log aside) are as they were"""
        after = file_digests(work / "run", skip=(log,))
        changed = sorted(
            name for name in before[work].keys() | after.keys() if before[work].get(name) != after.get(name)
        )
        return f"the finished run's files changed: {changed[:6]}" if changed else None

    def killed_then_resumed(fx: Fixtures, work: Path) -> Step:
        run_dir = work / "run"
        env = {"PYTHONPATH": str(fx.hooks()), "FAULT_SURVEY_KILL": "step_begin:2"}
        argv = [PY, "train.py", *SAVING, f"hydra.run.dir={run_dir}"]
        killed = fx.run(argv, env)
        setup = f"{shlex.join(f'{k}={v}' for k, v in env.items())} {shlex.join(argv)} -> exit {killed.exit_status}"
        left = sorted(path.name for path in run_dir.iterdir()) if run_dir.is_dir() else []
        step = Step([PY, "train.py", f"resume={run_dir}"], setup=f"{setup}, left {left}", timeout=180)
        if killed.exit_status != -9:
            step.not_measured = f"the kill hook did not fire (exit {killed.exit_status}): {killed.stderr[-300:]}"
        elif not (run_dir / "checkpoint-2").is_dir():
            step.not_measured = f"the killed run left no checkpoint-2 ({checkpoint_names(run_dir)})"
        return step

    def resumed(outcome: Outcome, work: Path) -> str | None:
        """the resumed run was not blocked by what the killed run left (a lock), and its metrics.json loss and
        predictions.json equal the uninterrupted run's"""
        return same_as_reference(fx, work / "run")

    return [
        Case(
            "run_folder: two debug=fast runs started at the same time in one hydra.run.dir",
            "run_folder",
            ERROR,
            same_time,
            other_finished,
        ),
        Case(
            "run_folder: a new run into a folder holding a finished run",
            "run_folder",
            ERROR,
            into_finished,
            left_as_it_was,
            needs=("fast_run",),
        ),
        Case(
            "run_folder: kill -9 at step 3 (a stale lock), then resume",
            "run_folder",
            HANDLED,
            killed_then_resumed,
            resumed,
            needs=("reference",),
        ),
    ]


# image modes: what the model sees -------------------------------------------------------------------------------------

IMAGE_SIDE = 64  # the tiny model's image size: the processor does not resample


def write_i16(path: Path) -> None:
    import numpy as np

    Image.fromarray(np.full((IMAGE_SIDE, IMAGE_SIDE), 32768, dtype=np.uint16)).save(path, format="PNG")


def write_float(path: Path) -> None:
    import numpy as np

    ramp = np.tile(np.linspace(0.0, 1.0, IMAGE_SIDE, dtype=np.float32), (IMAGE_SIDE, 1))
    Image.fromarray(ramp, mode="F").save(path, format="TIFF")


def write_la(path: Path) -> None:
    import numpy as np

    pixels = np.zeros((IMAGE_SIDE, IMAGE_SIDE, 2), dtype=np.uint8)
    pixels[:, : IMAGE_SIDE // 2] = (128, 255)  # opaque mid-grey
    pixels[:, IMAGE_SIDE // 2 :] = (37, 0)  # transparent; its hidden grey is 37
    Image.fromarray(pixels, mode="LA").save(path, format="PNG")


def write_palette(path: Path) -> None:
    import numpy as np

    indices = np.ones((IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    indices[:, IMAGE_SIDE // 2 :] = 0
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 255, 0, 128, 128, 128] + [0, 0, 0] * 254)  # 0: green, transparent; 1: mid-grey
    image.save(path, format="PNG", transparency=0)


def write_cmyk(path: Path) -> None:
    Image.new("CMYK", (IMAGE_SIDE, IMAGE_SIDE), (0, 0, 0, 128)).save(path, format="JPEG", quality=95)


def grey_near(rgb: Any, value: float, tolerance: float) -> str | None:
    means = [round(float(channel), 1) for channel in rgb.reshape(-1, 3).mean(axis=0)]
    if any(abs(mean - value) > tolerance for mean in means):
        return f"channel means {means}, expected grey {value} +- {tolerance}"
    return None


def whole_mid_grey(rgb: Any) -> str | None:
    return grey_near(rgb, 128, 12)


def ramp_mid_grey(rgb: Any) -> str | None:
    return grey_near(rgb, 128, 16)


def halves(rgb: Any) -> tuple[Any, Any]:
    quarter = IMAGE_SIDE // 4
    return rgb[:, 4 : 2 * quarter - 4], rgb[:, 2 * quarter + 4 : -4]


def la_seen(rgb: Any) -> str | None:
    opaque, transparent = halves(rgb)
    problem = grey_near(opaque, 128, 12)
    if problem:
        return f"the opaque half: {problem}"
    hidden = float(transparent.mean())
    return f"the transparent half shows its hidden grey 37 (mean {hidden:.1f})" if abs(hidden - 37) < 12 else None


def palette_seen(rgb: Any) -> str | None:
    opaque, transparent = halves(rgb)
    problem = grey_near(opaque, 128, 12)
    if problem:
        return f"the opaque half: {problem}"
    red, green, blue = (float(value) for value in transparent.reshape(-1, 3).mean(axis=0))
    if green - max(red, blue) > 100:
        return f"the transparent half shows its hidden palette green (RGB means {red:.0f}, {green:.0f}, {blue:.0f})"
    return None


# A fallback when the recording hook did not fire: the project's conversion (`vqa.data.images.to_rgb`) if it exists,
# else what predict did before it (PIL's convert("RGB")), applied to the file; argv: image, output .npy.
CONVERT_SNIPPET = """
import sys
import numpy
from PIL import Image
try:
    from vqa.data.images import to_rgb
except ImportError:
    to_rgb, how = (lambda image: image.convert("RGB")), "PIL convert('RGB'), as predict did (no vqa.data.images.to_rgb)"
else:
    how = "vqa.data.images.to_rgb"
with Image.open(sys.argv[1]) as image:
    numpy.save(sys.argv[2], numpy.asarray(to_rgb(image), dtype=numpy.float32))
print(how)
"""


def image_mode_case(name: str, write: Callable[[Path], Any], suffix: str, judge: Callable[[Any], str | None]) -> Case:
    def prepare(fx: Fixtures, work: Path) -> Step:
        work.mkdir(parents=True, exist_ok=True)
        image = work / f"image{suffix}"
        write(image)
        step = predict_step(fx.fast_run() / "checkpoint", image)
        step.env = {"PYTHONPATH": str(fx.hooks()), "FAULT_SURVEY_RECORD_PIXELS": str(work / "seen.npy")}
        return step

    def check(outcome: Outcome, work: Path) -> str | None:
        import numpy as np

        seen = work / "seen.npy"
        if seen.is_file():
            return judge(np.load(seen))
        converted = work / "converted.npy"
        done = subprocess.run(
            [PY, "-c", CONVERT_SNIPPET, str(work / f"image{suffix}"), str(converted)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            errors="replace",
        )
        if done.returncode != 0:
            return f"no pixels recorded, and the conversion snippet failed: {done.stderr.strip()[-200:]}"
        problem = judge(np.load(converted))
        how = f"no pixels recorded from predict; the file converted by {done.stdout.strip()}"
        check.__doc__ = f"{how}: {judge.__doc__}"  # the evidence this case's record names
        return f"{problem} ({how})" if problem else None

    check.__doc__ = "the pixel values predict gave the model (recorded at VQAProcessor.__call__) show " + (
        judge.__doc__ or judge.__name__
    )
    return Case(name, "image_modes", HANDLED, prepare, check, needs=("fast_run",))


whole_mid_grey.__doc__ = "a mid-grey image (channel means 128 +- 12)"
ramp_mid_grey.__doc__ = "the 0-1 ramp as mid-grey on average (128 +- 16)"
la_seen.__doc__ = "the opaque half mid-grey and the transparent half not its hidden grey 37"
palette_seen.__doc__ = "the opaque half mid-grey and the transparent half not its hidden palette green"


def image_mode_cases() -> list[Case]:
    return [
        image_mode_case(
            "image_modes: predict on a 16-bit greyscale PNG (I;16, 32768)", write_i16, ".png", whole_mid_grey
        ),
        image_mode_case(
            "image_modes: predict on a palette PNG with a transparent colour", write_palette, ".png", palette_seen
        ),
        image_mode_case("image_modes: predict on a greyscale PNG with alpha (LA)", write_la, ".png", la_seen),
        image_mode_case("image_modes: predict on a CMYK JPEG (K=128)", write_cmyk, ".jpg", whole_mid_grey),
        image_mode_case(
            "image_modes: predict on a 32-bit float TIFF (F, 0-1 ramp)", write_float, ".tif", ramp_mid_grey
        ),
    ]


# init_from with a model override --------------------------------------------------------------------------------------


def recorded_as_trained(key: str, read: Callable[[dict[str, Any]], Any], normal: Callable[[Any], Any]) -> Check:
    def check(outcome: Outcome, work: Path) -> str | None:
        import yaml

        run_dir = work / "run"
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        recorded = normal((config.get("model") or {}).get(key))
        trained = normal(read(json.loads((run_dir / "checkpoint" / "config.json").read_text())))
        if recorded != trained:
            return f"config.yaml records model.{key} {recorded!r}, the trained checkpoint/config.json has {trained!r}"
        return None

    check.__doc__ = f"config.yaml's model.{key} equals what the run's checkpoint/config.json holds"
    return check


def init_from_case(name: str, check: Check, *overrides: str) -> Case:
    def prepare(fx: Fixtures, work: Path) -> Step:
        return train_step(work, (f"init_from={fx.fast_run()}", *overrides))

    # refused in one line, or accepted with the model that was trained recorded as such
    return Case(name, "init_from", EITHER, prepare, check, needs=("fast_run",))


def init_from_cases() -> list[Case]:
    def targets(value: Any) -> list[str]:
        if isinstance(value, dict):
            value = value.get("targets")
        return sorted(value or [])

    return [
        init_from_case(
            "init_from: a tokens-fusion run with model.fusion=pooled",
            recorded_as_trained("fusion", lambda config: config.get("fusion"), str),
            "model.fusion=pooled",
        ),
        init_from_case(
            "init_from: a run without LoRA with model.lora.targets=[decoder]",
            recorded_as_trained("lora", lambda config: config.get("lora"), targets),
            "model.lora.targets=[decoder]",
        ),
    ]


# options: wrong values, wrong types, options with no effect -----------------------------------------------------------


def options_case(name: str, *overrides: str, init_from: bool = False) -> Case:
    def prepare(fx: Fixtures, work: Path) -> Step:
        start = (f"init_from={fx.fast_run()}",) if init_from else ()
        return train_step(work, (*start, *overrides))

    return Case(name, "options", ERROR, prepare, no_run_folder, needs=("fast_run",) if init_from else ())


def options_cases() -> list[Case]:
    return [
        options_case(
            "options: model.lora.alpha=0 (with LoRA on)", "model.lora.targets=[decoder]", "model.lora.alpha=0"
        ),
        options_case("options: model.cross_attention_gate=maybe", "model.cross_attention_gate=maybe"),
        options_case(
            "options: objective=rl objective.samples=abc", "objective=rl", "objective.samples=abc", init_from=True
        ),
        options_case(
            "options: objective=rl +objective.nonsense=1", "objective=rl", "+objective.nonsense=1", init_from=True
        ),
        options_case(
            "options: model.fusion=resampler model.resampler.latents=abc",
            "model.fusion=resampler",
            "model.resampler.latents=abc",
        ),
        options_case(
            "options: model.fusion=resampler model.resampler.heads=2.5",
            "model.fusion=resampler",
            "model.resampler.heads=2.5",
        ),
        options_case("options: model.dropout=1.5", "model.dropout=1.5"),
        options_case(
            "options: model.resampler.latents=16 with fusion=tokens (no effect)",
            "model.fusion=tokens",
            "model.resampler.latents=16",
        ),
        options_case("options: model.lora.r=4 without LoRA targets (no effect)", "model.lora.r=4"),
    ]


# encoders of families the model cannot use ----------------------------------------------------------------------------


def encoder_folders(fx: Fixtures) -> dict[str, Path]:
    """Random-init checkpoint folders (save_pretrained, as a hub download leaves them) of DistilBERT, T5, ViT, Swin
    and GPT-2, with the debug=fast run's tokenizers and image processor."""

    def make() -> dict[str, Path]:
        import torch
        from transformers import (
            AutoModel,
            AutoTokenizer,
            DistilBertConfig,
            GPT2Config,
            GPT2LMHeadModel,
            SwinConfig,
            T5Config,
            ViTConfig,
        )

        checkpoint = fx.fast_run() / "checkpoint"
        questions = AutoTokenizer.from_pretrained(checkpoint / "question_tokenizer")
        answers = AutoTokenizer.from_pretrained(checkpoint / "answer_tokenizer")
        small = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
        text = {
            "distilbert": DistilBertConfig(vocab_size=len(questions), dim=32, n_layers=1, n_heads=2, hidden_dim=64),
            "t5": T5Config(vocab_size=len(questions), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2),
        }
        image = {
            "vit": ViTConfig(hidden_size=32, image_size=IMAGE_SIDE, patch_size=8, **small),
            "swin": SwinConfig(
                image_size=IMAGE_SIDE, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4
            ),
        }
        root = fx.tmp / "encoders"
        torch.manual_seed(0)
        paths = {name: root / name for name in [*text, *image, "gpt2"]}
        for name, config in text.items():
            AutoModel.from_config(config).save_pretrained(paths[name])
            questions.save_pretrained(paths[name])
        for name, config in image.items():
            AutoModel.from_config(config).save_pretrained(paths[name])
            shutil.copyfile(checkpoint / "preprocessor_config.json", paths[name] / "preprocessor_config.json")
        decoder = GPT2Config(vocab_size=len(answers), n_embd=32, n_layer=1, n_head=2, n_positions=16)
        decoder.pad_token_id, decoder.bos_token_id, decoder.eos_token_id = 0, 1, 2
        GPT2LMHeadModel(decoder).save_pretrained(paths["gpt2"])
        answers.save_pretrained(paths["gpt2"])
        return paths

    return fx.once("encoders", make)


def no_data_build(outcome: Outcome, work: Path) -> str | None:
    """no record of a vqa.data logger (the data build had not started) and no run folder"""
    if re.search(r"\]\[vqa\.data[.\]]", log_of(outcome)):
        return "the data build had started (a vqa.data log record)"
    return no_run_folder(outcome, work)


def encoder_case(name: str, text: str, image: str, family: str | None) -> Case:
    """`family` None: the control (DistilBERT and ViT folders train); else one line naming it, before the data."""

    def prepare(fx: Fixtures, work: Path) -> Step:
        folders = encoder_folders(fx)
        chosen = (f"model.text_encoder={folders[text]}", f"model.image_encoder={folders[image]}")
        return train_step(work, ("model=base", *chosen, f"model.decoder={folders['gpt2']}"))

    def trained(outcome: Outcome, work: Path) -> str | None:
        """the run trained with these folders and wrote metrics.json (the fixture folders are sound)"""
        return None if (work / "run" / "metrics.json").is_file() else "no metrics.json"

    if family is None:
        return Case(name, "encoders", HANDLED, prepare, trained, needs=("fast_run",))
    check = both(line_names((family,)), no_data_build)
    return Case(name, "encoders", ERROR, prepare, check, needs=("fast_run",))


def encoder_cases() -> list[Case]:
    return [
        encoder_case("encoders: DistilBERT and ViT folders (control)", "distilbert", "vit", None),
        encoder_case("encoders: a T5 folder as model.text_encoder", "t5", "vit", "t5"),
        encoder_case("encoders: a Swin folder as model.image_encoder", "distilbert", "swin", "swin"),
    ]


# rewards that return the wrong thing ----------------------------------------------------------------------------------


def reward_case(name: str, reward: str) -> Case:
    return Case(
        name,
        "rewards",
        ERROR,
        lambda fx, work: rl_step(fx, work, reward),
        line_names((reward,)),
        needs=("fast_run",),
    )


def reward_cases() -> list[Case]:
    def pipeline(fx: Fixtures, work: Path) -> Step:
        return rl_step(
            fx,
            work,
            None,
            "objective.reward._target_=vqa.training.rewards.PipelineReward",
            f"+objective.reward.model={work / 'no-such-reward-model'}",
            "~objective.reward._partial_",
        )

    return [
        reward_case("rewards: a reward returning one score too many", "wrong_count_reward"),
        reward_case("rewards: a reward returning a string", "string_reward"),
        reward_case("rewards: a reward returning None", "none_reward"),
        Case(
            "rewards: PipelineReward with a model folder that does not exist",
            "rewards",
            ERROR,
            pipeline,
            both(line_names(("PipelineReward", "objective.reward")), no_run_folder),
            needs=("fast_run",),
        ),
    ]


# services: launchers, searches, the demo, predict's arguments ---------------------------------------------------------


def services_cases() -> list[Case]:
    def sweep(work: Path, *overrides: str, flags: tuple[str, ...] = ()) -> Step:
        return Step([PY, "train.py", *flags, *FAST, *overrides, f"hydra.sweep.dir={work / 'sweep'}"])

    garbage = b"this is not an SQLite database\n"

    def not_sqlite(fx: Fixtures, work: Path) -> Step:
        (work / "sweep").mkdir(parents=True)
        (work / "sweep" / "optuna.db").write_bytes(garbage)
        return sweep(work, "hparams_search=optuna", "hydra.sweeper.n_trials=1")

    def storage_kept(outcome: Outcome, work: Path) -> str | None:
        """optuna.db is left as it was"""
        return None if (work / "sweep" / "optuna.db").read_bytes() == garbage else "optuna.db was overwritten"

    ports: dict[Path, int] = {}

    def port_in_use(fx: Fixtures, work: Path) -> Step:
        import socket

        run_dir = fx.fast_run()
        work.mkdir(parents=True, exist_ok=True)
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.bind(("127.0.0.1", 0))
        held.listen()
        ports[work] = held.getsockname()[1]
        argv = [PY, "-m", "vqa.inspection.demo", "--checkpoint", str(run_dir), "--port", str(ports[work])]
        step = Step(argv, setup=f"port {ports[work]} held open by the survey", timeout=120)
        step.cleanup.append(held.close)
        return step

    def names_port(outcome: Outcome, work: Path) -> str | None:
        """the error line names the port"""
        return None if str(ports[work]) in the_error_line(outcome) else "the error line does not name the port"

    def bomb(side: int) -> Callable[[Fixtures, Path], Step]:
        return lambda fx, work: predict_step(fx.fast_run() / "checkpoint", fx.bomb(side))

    def latin1_question(fx: Fixtures, work: Path) -> Step:
        step = predict_step(fx.fast_run() / "checkpoint", fx.image())
        step.argv[step.argv.index(QUESTION)] = "what café is this?".encode("latin-1")
        return step

    return [
        Case(
            "services: -m hydra/launcher=slurm on a machine without SLURM",
            "services",
            ERROR,
            lambda fx, work: sweep(work, "hydra/launcher=slurm", flags=("-m",)),
            line_names(("slurm", "sbatch")),
        ),
        Case(
            "services: hparams_search=optuna hydra.sweeper.n_trials=0",
            "services",
            ERROR,
            lambda fx, work: sweep(work, "hparams_search=optuna", "hydra.sweeper.n_trials=0"),
            line_names(("n_trials",)),
        ),
        Case(
            "services: hparams_search=optuna with an optuna.db that is not SQLite",
            "services",
            ERROR,
            not_sqlite,
            both(line_names(("optuna.db", "storage")), storage_kept),
        ),
        Case(
            "services: demo on a port in use",
            "services",
            ERROR,
            port_in_use,
            names_port,
            needs=("fast_run",),
        ),
        Case(
            "services: predict on a decompression bomb 100 Mpx PNG",
            "services",
            ERROR,
            bomb(10000),
            needs=("fast_run",),
        ),
        Case(
            "services: predict on a decompression bomb 196 Mpx PNG",
            "services",
            ERROR,
            bomb(14000),
            needs=("fast_run",),
        ),
        Case(
            "services: predict with a --question that is not UTF-8 (latin-1 bytes)",
            "services",
            ERROR,
            latin1_question,
            needs=("fast_run",),
        ),
    ]


# reports and scoring on damaged folders -------------------------------------------------------------------------------


def report_cases() -> list[Case]:
    def damaged_run(name: str, damage: Callable[[Path], Any]) -> Callable[[Fixtures, Path], Step]:
        def prepare(fx: Fixtures, work: Path) -> Step:
            run_dir = work / "run"
            shutil.copytree(fx.fast_run(), run_dir)
            damage(run_dir / name)
            return Step([PY, "-m", "vqa.inspection.report", str(run_dir)])

        return prepare

    def sweep_with_damaged_overrides(fx: Fixtures, work: Path) -> Step:
        for job, fusion in enumerate(("tokens", "pooled")):
            hydra_dir = work / "sweep" / str(job) / ".hydra"
            hydra_dir.mkdir(parents=True)
            (hydra_dir / "overrides.yaml").write_text(f"- model.fusion={fusion}\n")
            shutil.copyfile(fx.fast_run() / "metrics.json", hydra_dir.parent / "metrics.json")
        (work / "sweep" / "1" / ".hydra" / "overrides.yaml").write_text("model: [unclosed\n")
        return Step([PY, "-m", "vqa.inspection.sweep_report", str(work / "sweep")])

    def job_marked(outcome: Outcome, work: Path) -> str | None:
        """report.csv is written with both jobs, and a line names job 1's overrides.yaml"""
        import csv

        table = work / "sweep" / "report.csv"
        if not table.is_file():
            return "no report.csv"
        runs = [row.get("run") for row in csv.DictReader(table.read_text().splitlines())]
        if runs != ["0", "1"]:
            return f"report.csv lists runs {runs}, expected 0 and 1"
        if not any("overrides.yaml" in line for line in log_of(outcome).splitlines()):
            return "no line names the damaged overrides.yaml"
        return None

    def score(fx: Fixtures, work: Path, folder_as: str) -> Step:
        root = fx.v2_pristine()
        (work / "folder").mkdir(parents=True)
        results = work / "results.json"
        results.write_text("[]")
        files = {"--questions": root / VAL_Q, "--annotations": root / VAL_A, "--results": results}
        files[folder_as] = work / "folder"
        return Step([PY, "-m", "vqa.evaluation.score_files", *(str(item) for pair in files.items() for item in pair)])

    return [
        Case(
            "report: report CLI on a run with a damaged predictions.json",
            "report",
            EITHER,
            damaged_run("predictions.json", truncate),
            warns_about("predictions.json"),
            needs=("fast_run",),
        ),
        Case(
            "report: report CLI on a run with a damaged config.yaml",
            "report",
            EITHER,
            damaged_run("config.yaml", lambda path: path.write_text("model: [unclosed\n")),
            warns_about("config.yaml"),
            needs=("fast_run",),
        ),
        Case(
            "report: sweep_report with one job's .hydra/overrides.yaml damaged",
            "report",
            HANDLED,
            sweep_with_damaged_overrides,
            job_marked,
            needs=("fast_run",),
        ),
        Case(
            "report: score_files with a folder as --results",
            "report",
            ERROR,
            lambda fx, work: score(fx, work, "--results"),
        ),
        Case(
            "report: score_files with a folder as --questions",
            "report",
            ERROR,
            lambda fx, work: score(fx, work, "--questions"),
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
        *divergence_cases(),
        *run_folder_cases(fx),
        *image_mode_cases(),
        *init_from_cases(),
        *options_cases(),
        *encoder_cases(),
        *reward_cases(),
        *services_cases(),
        *report_cases(),
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
        [*(f"{key}={shlex.quote(value)}" for key, value in step.env.items()), shlex.join(map(shown, step.argv))]
    )
    if step.setup:
        record["setup"] = step.setup
    try:
        if step.not_measured:
            return {**record, "exit_status": None, "outcome": "other", "detail": step.not_measured, "stderr_tail": ""}
        outcome = fx.run(step.argv, step.env, step.timeout)
        if step.pick is not None:
            outcome = step.pick(outcome)
        verdict, detail = classify(case, outcome, work)
    finally:
        for process in step.background:
            process.stop()
        for cleanup in step.cleanup:
            cleanup()
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
    refusal = "duplicate case names" if len(set(names)) != len(names) else None
    refusal = refusal or (None if cases else f"--only {args.only!r} matches no case")
    if refusal:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"error: {refusal}")
    start = time.perf_counter()
    try:
        fx.prepare_needed({name for case in cases for name in case.needs})
        # Longest first (training runs), so that the two workers finish together.
        order = sorted(cases, key=lambda case: case.category not in LONG_CATEGORIES)
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
