"""Hydra `_target_` nodes (the config's model, data, objective, reward) turned into objects, with this project's
errors: a user error raised by the target stays itself (not wrapped by Hydra), and a target that cannot be imported
is one line naming the config key. Also where an import path saved before `vqa` became packages by stage points now.
"""

from __future__ import annotations

import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from vqa.errors import ConfigError, UserError, one_line


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, with a user error of the target (bad data, a bad option) raised as itself: Hydra
    wraps every exception of a target in an InstantiationException. A `_target_` that cannot be imported (a typo in
    an override) is a ConfigError naming the config key."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        if isinstance(error.__cause__, ImportError):
            # Hydra's message names the full key of a nested target (`full_key: objective.reward`).
            nested = re.search(r"full_key: (\S+)", str(error))
            key = nested.group(1) if nested else node._key()
            raise ConfigError(f"{key}._target_: cannot be imported ({one_line(str(error.__cause__))})") from None
        raise


# Modules that moved when `vqa` became packages by stage (old -> new): a run folder written before names its
# targets (`model._target_: vqa.builders.tiny_model_and_processor`, ...) by the old paths.
MOVED_MODULES = {
    "vqa.builders": "vqa.model.builders",
    "vqa.fusion": "vqa.model.fusion",
    "vqa.resampler": "vqa.model.resampler",
    "vqa.objectives": "vqa.training.objectives",
    "vqa.policy_gradient": "vqa.training.policy_gradient",
    "vqa.rewards": "vqa.training.rewards",
}
# Import paths renamed with the move (old -> new), matched whole before the module prefixes above.
RENAMED_TARGETS = {"vqa.rewards.vqa_accuracy": "vqa.training.rewards.vqa_accuracy_reward"}
MOVED_PATH = re.compile(rf"^({'|'.join(re.escape(old) for old in MOVED_MODULES)})\.")


def current_import_path(path: str) -> str:
    """Where an import path written before `vqa` became packages by stage (a saved config's `_target_`, a
    checkpoint's fusion class) points now; any other string unchanged."""
    path = RENAMED_TARGETS.get(path, path)
    return MOVED_PATH.sub(lambda match: MOVED_MODULES[match.group(1)] + ".", path)
