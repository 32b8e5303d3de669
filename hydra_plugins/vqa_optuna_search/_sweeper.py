"""`hparams_search=optuna`: Hydra's Optuna sweeper (hydra-optuna-sweeper), made to continue an interrupted search.

The plugin already reopens a study that its storage holds (`load_if_exists`), but three things stop a search in an
SQLite file inside the sweep folder from continuing as one search:

- SQLite needs the file's folder to exist when the study is created, and the launcher creates the sweep folder
  only when it starts the first job;
- every start numbers its jobs from 0, so a continued search would write its trials into the folders of the first
  ones;
- every start seeds the sampler alike, so a continued search would repeat the first start's random trials.

`ContinuingOptunaSweeper` creates the folder, numbers each job after the trials the study already holds (job folder
N is Optuna's trial N, and the sweep table lists every trial of the search) and, when it continues a study,
reseeds the sampler. Before all that, when Hydra builds it, it checks the search's own settings and its SQLite file
(`checks.py`): a mistake there is one line on stderr and exit status 2, before any trial.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

from hydra_plugins.vqa_optuna_search.checks import SQLITE_PREFIX, check_search_settings
from vqa.errors import exit_on_user_error

logger = logging.getLogger(__name__)

NO_COMPLETED_TRIAL = "No trials are completed yet."  # optuna 2.10's error for the best trial of such a study


class ContinuingOptunaSweeper(OptunaSweeper):
    """The plugin's `OptunaSweeper`; a rerun of the same command continues the study where it stopped."""

    def __init__(self, **settings: Any) -> None:
        # Raised in a sweeper's constructor, a user error would reach train.py as a traceback: exit here instead.
        with exit_on_user_error():
            check_search_settings(**settings)
        super().__init__(**settings)

    def sweep(self, arguments: list[str]) -> Any:
        storage, study_name = self.sweeper.storage, self.sweeper.study_name
        if isinstance(storage, str) and storage.startswith(SQLITE_PREFIX):
            Path(storage.removeprefix(SQLITE_PREFIX)).parent.mkdir(parents=True, exist_ok=True)
        trials_so_far = trials_in_storage(storage, study_name)
        if trials_so_far:
            logger.info("optuna study %s holds %d trials in %s: continuing", study_name, trials_so_far, storage)
            # The configured seed made the first start's trials; the same seed would draw them again.
            if hasattr(self.sweeper.sampler, "reseed_rng"):  # not the grid sampler, which is built later
                self.sweeper.sampler.reseed_rng()
        self.sweeper.job_idx = trials_so_far
        try:
            result = super().sweep(arguments)
        except ValueError as error:
            # The plugin asks the study for its best trial at the end, which fails when every trial failed; the
            # sweep table (printed next) then shows each failure, and the multirun's exit status says it failed.
            if str(error) != NO_COMPLETED_TRIAL:
                raise
            logger.error("optuna study %s: no trial finished, so there is no best trial", study_name)
            return None
        record_final_split_of_best(Path(self.sweeper.config.hydra.sweep.dir), storage, study_name)
        return result


def record_final_split_of_best(sweep_dir: Path, storage: str | None, study_name: str | None) -> None:
    """Add to the plugin's optimization_results.yaml what its best value is (the validation accuracy train.py
    returns) and the best trial's final-split accuracy from its metrics.json, for the record: the search never reads
    it. Nothing is added for a study without storage (the trial's folder cannot be told)."""
    results_file = sweep_dir / "optimization_results.yaml"
    if storage is None or study_name is None or not results_file.is_file():
        return
    import optuna

    best = optuna.load_study(study_name=study_name, storage=storage).best_trial
    metrics_file = sweep_dir / str(best.number) / "metrics.json"  # folder N holds trial N
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    results = yaml.safe_load(results_file.read_text())
    results.update(
        objective="val_vqa_accuracy: the validation split's VQA accuracy (the final split is never read)",
        best_trial=best.number,
        best_trial_final_split={"split": metrics.get("split"), "vqa_accuracy": metrics.get("vqa_accuracy")},
    )
    results_file.write_text(yaml.safe_dump(results, sort_keys=False))


def trials_in_storage(storage: str | None, study_name: str | None) -> int:
    """How many trials (of any state) the study `study_name` holds in `storage`; 0 for no storage or no study."""
    if storage is None or study_name is None:
        return 0
    import optuna  # the plugin's dependency, imported when a search runs

    summaries = optuna.get_all_study_summaries(storage=storage)
    return next((summary.n_trials for summary in summaries if summary.study_name == study_name), 0)
