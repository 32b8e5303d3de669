"""Hydra `_target_` nodes (the config's model, data, objective, reward) turned into objects, with this project's
errors: a user error raised by the target stays itself (not wrapped by Hydra), and a target that cannot be imported
is one line naming the config key."""

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
