"""Train a VQA model and evaluate it with the official VQA accuracy.

    python train.py                                   # easy-VQA, tiny model, CPU (what `make train` runs)
    python train.py experiment=vqa_v2_base data.root=/data/vqa
    python train.py -m model.freeze=nothing,encoders  # a sweep
    python train.py resume=outputs/2026-11-21/10-00-00

`python train.py --help` lists the config groups; `python train.py --cfg job` prints the composed config.
A wrong setting, file or checkpoint ends the run with one line on stderr and exit status 2 (vqa/errors.py).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from vqa.errors import exit_on_user_error, exit_with
from vqa.run import in_multirun, run, run_in_sweep
from vqa.training.cluster import join_submitit_job, process_rank

CONF = Path(__file__).resolve().parent / "conf"
# `${or_else:a,b}` is a unless a is null: conf/config.yaml uses it for the run folder of a resumed run.
OmegaConf.register_new_resolver("or_else", lambda value, default: default if value is None else value, replace=True)
# `${own_hydra_files:resume}`: `.hydra` for a new run's first process; null (Hydra writes no files) for a resumed run,
# which keeps its first start's, and for the other ranks of a distributed run, which share rank 0's folder: rank 0
# writes them once it holds the folder's lock (vqa/run_folder.py).
OmegaConf.register_new_resolver(
    "own_hydra_files",
    lambda resume: ".hydra" if resume is None and process_rank() == 0 else None,
    replace=True,
)


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("vqa").setLevel(logging.INFO)
    join_submitit_job()  # under hydra/launcher=slurm: this process is one DDP rank of the job (vqa/training/cluster.py)
    if in_multirun():  # a failed job is recorded and the sweep goes on; its report marks it and sets the exit status
        return run_in_sweep(cfg)
    with exit_on_user_error():
        return run(cfg)


def composition_error_line(error: Exception) -> str:
    """Hydra's multi-line composition errors as one line; an unknown group option names the group's options."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and error.options:
        group, _, option = error.missing_cfg_file.rpartition("/")
        line = f"{group}={option}: no such option in config group '{group}'; options: {', '.join(error.options)}"
        elsewhere = sorted(path.parent.name for path in CONF.glob(f"*/{option}.yaml") if path.parent.name != group)
        return line + "".join(f" ({other}={option} is an option of group '{other}')" for other in elsewhere)
    message = str(error).split("\nConfig search path:")[0]
    if error.__cause__ is not None:  # what OmegaConf said ("Key 'foo' is not in struct")
        message += "\n" + str(error.__cause__).splitlines()[0]
    return message


def conflicting_modes(arguments: list[str]) -> str | None:
    """The one-line refusal of `-m` together with `--cfg` (Hydra raises a ValueError with a traceback for it), or
    None: `--cfg` prints one composed config, and a sweep has one per job."""
    multirun = any(argument in ("-m", "--multirun") for argument in arguments)
    prints_config = any(argument in ("-c", "--cfg") or argument.startswith("--cfg=") for argument in arguments)
    if multirun and prints_config:
        return (
            "-m and --cfg together: --cfg prints one composed config and a sweep composes one per job; drop -m and "
            "give each swept key one value (python train.py seed=0 --cfg job)"
        )
    return None


if __name__ == "__main__":
    # Hydra prints its own errors with a stack-trace hint and exit status 1; with HYDRA_FULL_ERROR it raises them
    # instead, so a mistake on the command line becomes one line and exit status 2 here, and a genuine bug in a
    # run keeps its full traceback.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    if (conflict := conflicting_modes(sys.argv[1:])) is not None:
        exit_with(conflict)
    try:
        main()
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as error:
        exit_with(composition_error_line(error))
