"""This project's Hydra plugin: `ContinuingOptunaSweeper` (used by conf/hparams_search/optuna.yaml).

Hydra accepts a sweeper only from the `hydra_plugins` namespace, and imports every module in it at each start: the
sweeper is defined only where the Optuna sweeper plugin it extends is installed (`pip install -e ".[optuna]"`), so
runs without that extra start without an import warning.
"""

from importlib.util import find_spec

if find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
    from hydra_plugins.vqa_optuna_search._sweeper import ContinuingOptunaSweeper

    __all__ = ["ContinuingOptunaSweeper"]
