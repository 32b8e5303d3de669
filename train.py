"""Train a VQA model and evaluate it with the official VQA accuracy.

    python train.py                                   # easy-VQA, tiny model, CPU (what `make train` runs)
    python train.py experiment=vqa_v2_base data.root=/data/vqa
    python train.py -m model.freeze=nothing,encoders  # a sweep
    python train.py resume=outputs/2026-11-21/10-00-00

`python train.py --help` lists the config groups; `python train.py --cfg job` prints the composed config.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from vqa.run import run

# `${or_else:a,b}` is a unless a is null: conf/config.yaml uses it for the run folder of a resumed run.
OmegaConf.register_new_resolver("or_else", lambda value, default: default if value is None else value, replace=True)


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("vqa").setLevel(logging.INFO)
    return run(cfg)


if __name__ == "__main__":
    main()
