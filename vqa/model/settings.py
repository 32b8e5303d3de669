"""The model settings a user writes (`model.*` in the Hydra config, `VQAConfig`'s arguments), each checked in one
place: the run's checks before anything is built and `VQAConfig` itself call `model_settings`, so a wrong value
fails with the same line either way.

Errors are one-line `ValueError`s that begin with the setting's name (`fusion: ...`, `lora.r: ...`); the caller
adds where the setting came from (`model.` in the run, `VQAConfig.` in code).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from vqa.model.freezing import resolve_freeze
from vqa.model.fusion import fusion_class

Inputs = Literal["both", "question_only", "image_only"]
INPUTS: tuple[str, ...] = ("both", "question_only", "image_only")
LORA_TARGETS: tuple[str, ...] = ("decoder", "cross_attention", "text_encoder", "image_encoder")
LORA_DEFAULTS: dict[str, Any] = {"targets": [], "r": 8, "alpha": 16, "dropout": 0.0}
RESAMPLER_DEFAULTS: dict[str, int] = {"latents": 32, "layers": 2, "heads": 4}


def model_settings(
    fusion: str = "tokens",
    inputs: str = "both",
    freeze: str | list[str] = "nothing",
    lora: Mapping[str, Any] | None = None,
    resampler: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings checked, with LoRA's and the resampler's defaults filled in (`lora` None: no adapters).

    Raises:
        ValueError: one line naming the first wrong setting (an unknown fusion is found here, before any weights).
    """
    fusion_class(fusion)
    if inputs not in INPUTS:
        raise ValueError(f"inputs: got {inputs!r}, expected one of {', '.join(INPUTS)}")
    resolve_freeze(freeze)
    return {
        "fusion": fusion,
        "inputs": inputs,
        "freeze": list(freeze) if isinstance(freeze, list | tuple) else freeze,
        "lora": lora_settings(lora),
        "resampler": resampler_settings(resampler),
    }


def check_setting_names(names: Iterable[str], accepted: Iterable[str], fusion: str = "tokens") -> None:
    """Refuse a model setting nobody reads: each name must be in `accepted` (what the builder and `VQAConfig` take)
    or among the chosen fusion's `own_settings`; a misspelt key would otherwise be stored and silently ignored.

    Raises:
        ValueError: one line naming the first unknown key and, where one is close, the setting meant.
    """
    known = {*accepted, *fusion_class(fusion).own_settings}
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"{name}: not a setting of the model builder, VQAConfig or fusion {fusion!r}{hint}")


def lora_settings(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """LoRA's settings (LORA_DEFAULTS filled in), or None for no adapters (None or no targets).

    Raises:
        ValueError: one line naming the wrong key or value.
    """
    if value is None:
        return None
    settings = checked_settings("lora", value, LORA_DEFAULTS, positive_integers=("r",))
    targets = [settings["targets"]] if isinstance(settings["targets"], str) else list(settings["targets"])
    for target in targets:
        if target not in LORA_TARGETS:
            raise ValueError(f"lora.targets: unknown component {target!r}; expected some of {', '.join(LORA_TARGETS)}")
    if not 0 <= settings["dropout"] < 1:
        raise ValueError(f"lora.dropout: got {settings['dropout']!r}, expected a number in [0, 1)")
    return {**settings, "targets": targets} if targets else None


def resampler_settings(value: Mapping[str, Any] | None) -> dict[str, int]:
    """The resampler's settings (RESAMPLER_DEFAULTS filled in). Raises ValueError (one line) on an unknown key or a
    bad value."""
    return checked_settings("resampler", value or {}, RESAMPLER_DEFAULTS, positive_integers=tuple(RESAMPLER_DEFAULTS))


def checked_settings(
    name: str, value: Mapping[str, Any], defaults: Mapping[str, Any], positive_integers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A settings mapping (a dict, or Hydra's DictConfig) over `defaults`: unknown keys and non-positive integers
    raise one-line ValueErrors naming `name.key`."""
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise ValueError(f"{name}: unknown key {unknown[0]!r}; expected {', '.join(defaults)}")
    settings = {**defaults, **value}
    for key in positive_integers:
        number = settings[key]
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ValueError(f"{name}.{key}: got {number!r}, expected a positive integer")
    return settings
