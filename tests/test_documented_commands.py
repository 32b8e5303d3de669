"""Every `python train.py ...` and `torchrun ... train.py ...` command written in README.md, docs/*.md, the config
files' comments and `python train.py --help` composes and passes the run's own checks (no training), so a command
in the docs cannot rot.

Commands are taken from fenced code blocks and from backticks in prose. A sweep (`-m`, an `hparams_search` or an
experiment that sweeps) is composed once per value of each swept key, search-space intervals at both ends. A command
that runs on GPUs (GPU_OVERRIDES) must resolve to mixed precision, TF32, no full determinism and the GPU loader
workers. A command written
to show an error ends with `# refused: <part of the error line>` and must fail with that one line.
"""

from __future__ import annotations

import functools
import itertools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from train import composition_error_line, conflicting_modes
from vqa.config_checks import validate_config
from vqa.errors import UserError
from vqa.training.arguments import training_arguments

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
COMMAND = re.compile(r"^(?:\$ )?(python train\.py|torchrun )")
INLINE = re.compile(r"`((?:python train\.py|torchrun )[^`]*)`")
PLACEHOLDER = re.compile(r"<[^<>\s]+>")
REFUSED = re.compile(r"#\s*refused:\s*(.+)$")
# Options of train.py itself, not overrides; `--cfg` and `--info` take a value.
FLAGS = {"-m", "--multirun", "--help", "-h", "--hydra-help"}
FLAGS_WITH_VALUE = {"--cfg", "-c", "--info", "-p", "--package"}
# Commands that run on GPUs: the GPU experiments, the GPU recipe, FSDP, SLURM jobs (one task per GPU).
GPU_OVERRIDES = {"experiment=vqa_v2_base", "experiment=book", "trainer=gpu", "distributed=fsdp", "hydra/launcher=slurm"}
GPU_ONLY_ON_THIS_HOST = ("tf32", "fsdp")  # refused without CUDA (tests/test_configs.py checks the refusal)


@dataclass(frozen=True)
class Command:
    source: str  # file:line
    text: str
    refused: str | None  # the error fragment a command written to fail must print

    @property
    def arguments(self) -> list[str]:
        """What follows `train.py` on the command line; a placeholder such as `<date>` stands for a word."""
        words = shlex.split(PLACEHOLDER.sub("x", self.text))
        return words[words.index("train.py") + 1 :]


def commands_in_markdown(path: Path) -> list[Command]:
    """Command lines in the fenced code blocks of a Markdown file (a trailing backslash continues a line)."""
    found: list[Command] = []
    in_code, pending, start = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code, pending = not in_code, ""
            continue
        if not in_code:  # a command quoted in prose: `python train.py ...`
            found += [as_command(f"{path.relative_to(ROOT)}:{number}", text) for text in INLINE.findall(line)]
            continue
        stripped = line.strip()
        if not pending and not COMMAND.match(stripped):
            continue
        if not pending:
            start = number
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        found.append(as_command(f"{path.relative_to(ROOT)}:{start}", pending.strip()))
        pending = ""
    return found


def commands_in_config_comments() -> list[Command]:
    """`#   python train.py ...` lines in conf/, and the examples of `python train.py --help` (conf/config.yaml's
    help header, where two or more spaces separate a command from its description)."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        pending, start = "", 0
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            comment = re.match(r"^#\s+(.*)$", line.strip())
            text = comment.group(1).strip() if comment else ""
            if not pending and not COMMAND.match(text):
                continue
            if not pending:
                start = number
            pending += " " + text
            if pending.endswith("\\"):  # continued on the next comment line
                pending = pending[:-1]
                continue
            found.append(as_command(f"{path.relative_to(ROOT)}:{start}", pending.strip()))
            pending = ""
    header = OmegaConf.load(CONF / "config.yaml").hydra.help.header
    for line in header.splitlines():
        if COMMAND.match(line.strip()):
            found.append(as_command("python train.py --help", re.split(r"\s{2,}", line.strip())[0]))
    return found


def as_command(source: str, line: str) -> Command:
    refused = REFUSED.search(line)
    text = re.split(r"\s+#", line)[0].strip()  # a comment after the command
    return Command(source, text.removeprefix("$ "), refused.group(1).strip() if refused else None)


def documented_commands() -> list[Command]:
    markdown = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [command for path in markdown for command in commands_in_markdown(path)] + commands_in_config_comments()


def overrides_of(arguments: list[str]) -> tuple[list[str], bool]:
    """(the Hydra overrides, whether the command is a multirun): train.py's own flags left out."""
    overrides, multirun, skip = [], False, False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in FLAGS_WITH_VALUE:
            skip = True
        elif argument in FLAGS or argument.startswith("--cfg="):
            multirun = multirun or argument in ("-m", "--multirun")
        else:
            overrides.append(argument)
    return overrides, multirun


def swept_values(override: Override) -> list[str]:
    """The values a sweep override stands for: each choice, each step of a range, both ends of an interval."""
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [str(value.start), str(value.end)]
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def jobs(overrides: list[str]) -> list[list[str]]:
    """One override list per job, so that every swept value (command line and the config's sweeper params) is
    composed at least once; a command without sweeps is one job."""
    plain = [o for o in overrides if not OverridesParser.create().parse_override(o).is_sweep_override()]
    params = sweeper_params(tuple(plain))
    searched = OmegaConf.to_container(params) if params is not None else {}
    written = [*overrides, *(f"{key}={value}" for key, value in searched.items())]  # type: ignore[union-attr]
    parsed = OverridesParser.create().parse_overrides(written)
    fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
    fixed = [line for line in fixed if line is not None]
    swept = [
        override for override in parsed if override.is_sweep_override() or isinstance(override.value(), IntervalSweep)
    ]
    if not swept:
        return [fixed]
    values = [swept_values(override) for override in swept]
    rounds = max(len(options) for options in values)
    return [
        [
            *fixed,
            *(
                f"{o.get_key_element()}={options[index % len(options)]}"
                for o, options in zip(swept, values, strict=True)
            ),
        ]
        for index in range(rounds)
    ]


def sweeper_params(overrides: tuple[str, ...]) -> DictConfig | None:
    """The search space or grid the composed config's sweeper holds (`hydra.sweeper.params`), if any."""
    return composed_once(overrides).hydra.sweeper.get("params")


def composed(overrides: list[str]) -> DictConfig:
    """The job's config (a copy: the checks may change it); each distinct override list is composed once."""
    return composed_once(tuple(overrides)).copy()


@functools.cache
def composed_once(overrides: tuple[str, ...]) -> DictConfig:
    """The composed config with its `hydra` node (the sweeper's params): one composition serves both questions."""
    return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def checked(command: Command, tmp_path: Path) -> list[DictConfig]:
    """The command's composed configs, one per job, each through the checks a run makes before building anything.

    Raises:
        UserError, ConfigCompositionException, ...: what train.py turns into its one error line.
    """
    if (conflict := conflicting_modes(command.arguments)) is not None:
        raise UserError(conflict)
    overrides, _ = overrides_of(command.arguments)
    configs = []
    for job in jobs(overrides):
        cfg = composed(job)
        configs.append(cfg.copy())
        if not torch.cuda.is_available():  # GPU-only settings are refused on this host (tested elsewhere)
            for name in GPU_ONLY_ON_THIS_HOST:
                if cfg.trainer.args.get(name):
                    OmegaConf.update(cfg, f"trainer.args.{name}", None)
        validate_config(cfg)
        training_arguments(cfg, str(tmp_path))
    return configs


def error_line(command: Command, tmp_path: Path) -> str | None:
    try:
        checked(command, tmp_path)
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as error:
        return composition_error_line(error)
    except UserError as error:
        return str(error)
    return None


COMMANDS = documented_commands()


@pytest.fixture(scope="module", autouse=True)
def hydra_config_dir() -> Iterator[None]:
    """conf/ as Hydra's config source for every composition of this module (initialised once)."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield


def test_the_docs_have_commands_to_check() -> None:
    sources = {command.source.split(":")[0] for command in COMMANDS}
    assert {"README.md", "python train.py --help"} <= sources
    assert any(command.text.startswith("torchrun") for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.source} {c.text[:60]}" for c in COMMANDS])
def test_documented_command_composes_and_passes_the_runs_checks(command: Command, tmp_path: Path) -> None:
    if command.refused is not None:
        line = error_line(command, tmp_path)
        assert line is not None, f"{command.source}: written to be refused, but it passes: {command.text}"
        assert command.refused in line and "\n" not in line, f"{command.source}: {line}"
        return
    configs = checked(command, tmp_path)
    overrides, _ = overrides_of(command.arguments)
    if GPU_OVERRIDES & set(overrides):
        for cfg in configs:
            args = cfg.trainer.args
            assert (args.bf16 or args.get("fp16")) and args.tf32 is True, command.source
            assert args.full_determinism is False, command.source  # True sets CUDA_LAUNCH_BLOCKING=1
            assert args.dataloader_num_workers == 8, command.source


def test_a_sweep_is_composed_once_per_value_and_intervals_at_both_ends() -> None:
    """The expansion the checks above rely on: each value of each swept key in some job."""
    expanded = jobs(["hparams_search=optuna", "model=base"])
    assert {"model.fusion=tokens", "model.fusion=pooled", "model.fusion=resampler"} <= set(itertools.chain(*expanded))
    assert {"model.dropout=0.0", "model.dropout=0.3"} <= set(itertools.chain(*expanded))
    assert jobs(["seed=0,1,2"]) == [["seed=0"], ["seed=1"], ["seed=2"]]
