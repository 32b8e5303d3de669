"""The model settings a user writes (`model.*` in the Hydra config, `VQAConfig`'s arguments), each checked in one
place: the run's checks before anything is built and `VQAConfig` itself call these functions, so a wrong value
fails with the same line either way.

Types and ranges come from annotations: a setting annotated `PositiveInt`, `Probability`, ... (an `Annotated` type
with a `Range`) is checked against both by `check_value`, for the model builders' and `VQAConfig`'s arguments,
LoRA's and the resampler's settings (the dataclasses below) and the objectives' options alike.

Errors are one-line `ValueError`s that begin with the setting's name (`fusion: ...`, `lora.r: ...`); the caller
adds where the setting came from (`model.` in the run, `VQAConfig.` in code).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from vqa.model.freezing import resolve_freeze
from vqa.model.fusion import fusion_class


@dataclass(frozen=True)
class Range:
    """The values a number may take, for `Annotated[int, Range(...)]` (`check_value` reads it)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: `low` itself is outside
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low is None or value > self.low or (value == self.low and not self.low_open)
        below = self.high is None or value < self.high or (value == self.high and not self.high_open)
        return above and below

    def describe(self, integer: bool) -> str:
        """`a positive integer`, `a number > 0`, `a number in [0, 1)`, ..."""
        kind = "an integer" if integer else "a number"
        if integer and self.low == 1 and self.high is None:
            return "a positive integer"
        if self.high is None:
            return f"{kind} {'>' if self.low_open else '>='} {_number(self.low)}"
        if self.low is None:
            return f"{kind} {'<' if self.high_open else '<='} {_number(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{kind} in {left}{_number(self.low)}, {_number(self.high)}{right}"


PositiveInt = Annotated[int, Range(low=1)]  # sizes and counts
NonNegativeInt = Annotated[int, Range(low=0)]
PositiveNumber = Annotated[float, Range(low=0, low_open=True)]
NonNegativeNumber = Annotated[float, Range(low=0)]
Probability = Annotated[float, Range(low=0, high=1, high_open=True)]  # a dropout rate: 1 would drop everything

Inputs = Literal["both", "question_only", "image_only"]
INPUTS: tuple[str, ...] = typing.get_args(Inputs)
# What answers: the GPT-2 decoder writes the answer, or a classifier over a fixed answer vocabulary reads the decoder's
# BOS position (`vqa.model.classifier`).
Head = Literal["generator", "classifier"]
HEADS: tuple[str, ...] = typing.get_args(Head)
# How the model reads retrieved passages (`vqa.retrieval`): not at all, or as a fused segment encoded by the text
# encoder without gradients (`frozen`) or with them (`trained`, when the text encoder itself trains).
Passages = Literal["none", "frozen", "trained"]
PASSAGES: tuple[str, ...] = typing.get_args(Passages)
LORA_TARGETS: tuple[str, ...] = ("decoder", "cross_attention", "text_encoder", "image_encoder")


@dataclass
class LoraSettings:
    """`model.lora` (`vqa.model.lora`): the components that get adapters (none: no LoRA), rank, scale, dropout."""

    targets: str | list[str] = field(default_factory=list)
    r: PositiveInt = 8
    alpha: PositiveNumber = 16  # 0 would scale the adapters' output to 0: they would never train
    dropout: Probability = 0.0


@dataclass
class ResamplerSettings:
    """`model.resampler` (`vqa.model.resampler`): latents per image, layers, attention heads."""

    latents: PositiveInt = 32
    layers: PositiveInt = 2
    heads: PositiveInt = 4  # must divide the decoder width (checked where the width is known)


LORA_DEFAULTS: dict[str, Any] = dataclasses.asdict(LoraSettings())
RESAMPLER_DEFAULTS: dict[str, int] = dataclasses.asdict(ResamplerSettings())


def model_settings(
    fusion: str = "tokens",
    inputs: str = "both",
    freeze: str | list[str] = "nothing",
    lora: Mapping[str, Any] | None = None,
    resampler: Mapping[str, Any] | None = None,
    passages: str = "none",
) -> dict[str, Any]:
    """The settings checked, with LoRA's and the resampler's defaults filled in (`lora` None: no adapters).

    Raises:
        ValueError: one line naming the first wrong setting (an unknown fusion is found here, before any weights).
    """
    chosen_fusion = fusion_class(fusion)
    if inputs not in INPUTS:
        raise ValueError(f"inputs: got {inputs!r}, expected one of {', '.join(INPUTS)}")
    if passages not in PASSAGES:
        raise ValueError(f"passages: got {passages!r}, expected one of {', '.join(PASSAGES)}")
    if passages != "none" and not chosen_fusion.reads_passages:
        raise ValueError(
            f"passages: fusion={fusion!r} does not read passages, expected a fusion that does (tokens, resampler)"
        )
    resolve_freeze(freeze)
    return {
        "fusion": fusion,
        "inputs": inputs,
        "freeze": list(freeze) if isinstance(freeze, list | tuple) else freeze,
        "lora": lora_settings(lora),
        "resampler": resampler_settings(resampler),
        "passages": passages,
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


def check_settings_in_use(
    fusion: str = "tokens",
    freeze: str | list[str] = "nothing",
    lora: Mapping[str, Any] | None = None,
    resampler: Mapping[str, Any] | None = None,
    cross_attention_gate: bool = False,
) -> None:
    """Refuse settings that the model they are given would ignore or defeat. For a new run's config only (the run's
    checks): a saved checkpoint may hold such a combination and must still load.

    The presets spell out the LoRA and resampler defaults, so only values that differ from them count as set.

    Raises:
        ValueError: one line naming the setting, why it would have no effect, and what to change.
    """
    changed = {key: value for key, value in (resampler or {}).items() if RESAMPLER_DEFAULTS.get(key) != value}
    if changed and "resampler" not in fusion_class(fusion).reads_settings:
        key = next(iter(changed))
        raise ValueError(
            f"resampler.{key}: set to {changed[key]!r}, but fusion {fusion!r} has no resampler, so it would have no "
            "effect; add model.fusion=resampler, or leave model.resampler at its defaults"
        )
    lora = lora or {}
    targets = lora.get("targets") or []
    changed = {key: value for key, value in lora.items() if key != "targets" and LORA_DEFAULTS.get(key) != value}
    if changed and not targets:
        key = next(iter(changed))
        raise ValueError(
            f"lora.{key}: set to {changed[key]!r}, but lora.targets is empty (no adapters), so it would have no "
            f"effect; name the components, e.g. model.lora.targets=[decoder]"
        )
    if cross_attention_gate:
        # The gates are parameters of the cross_attention component: frozen (or frozen under LoRA, which freezes a
        # target's own weights) they stay at 0, and tanh(0) = 0 keeps every encoder input out of the decoder.
        frozen = resolve_freeze(freeze)
        adapted = [targets] if isinstance(targets, str) else list(targets)
        if "cross_attention" in frozen or "cross_attention" in adapted:
            cause = "model.freeze freezes" if "cross_attention" in frozen else "LoRA (model.lora.targets) freezes"
            raise ValueError(
                f"cross_attention_gate: true, but {cause} the cross_attention component the gates belong to: they "
                "would stay at 0 and the decoder would never read the question or the image; unfreeze "
                "cross_attention or set model.cross_attention_gate=false"
            )


def lora_settings(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """LoRA's settings (LoraSettings' defaults filled in), or None for no adapters (None or no targets).

    Raises:
        ValueError: one line naming the wrong key or value.
    """
    if value is None:
        return None
    settings = checked_settings("lora", value, LoraSettings)
    targets = [settings["targets"]] if isinstance(settings["targets"], str) else list(settings["targets"])
    for target in targets:
        if target not in LORA_TARGETS:
            raise ValueError(f"lora.targets: unknown component {target!r}; expected some of {', '.join(LORA_TARGETS)}")
    return {**settings, "targets": targets} if targets else None


def resampler_settings(value: Mapping[str, Any] | None, width: int | None = None) -> dict[str, int]:
    """The resampler's settings (ResamplerSettings' defaults filled in); with the decoder `width`, also that the
    heads divide it (the latents attend at that width).

    Raises:
        ValueError: one line on an unknown key or a bad value.
    """
    settings = checked_settings("resampler", value or {}, ResamplerSettings)
    if width is not None and width % settings["heads"]:
        raise ValueError(
            f"resampler.heads: got {settings['heads']}, which does not divide the decoder width {width}; expected a "
            "divisor of it"
        )
    return settings


def checked_settings(name: str, value: Mapping[str, Any], settings_class: type) -> dict[str, Any]:
    """A settings mapping (a dict, or Hydra's DictConfig) over the defaults of the dataclass `settings_class`, each
    value checked against the field's annotation (type and range).

    Raises:
        ValueError: one line naming `name.key`: an unknown key (with the accepted ones) or a wrong value.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: got {value!r} ({type(value).__name__}), expected a mapping of settings")
    fields = [item.name for item in dataclasses.fields(settings_class)]
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{name}: unknown key {unknown[0]!r}; expected {', '.join(fields)}")
    settings = {**dataclasses.asdict(settings_class()), **value}
    check_values(settings, annotations_of(settings_class), prefix=f"{name}.")
    return settings


# -- types and ranges from annotations ---------------------------------------------------------------------------


@functools.cache
def annotations_of(target: Callable[..., Any]) -> dict[str, Any]:
    """The annotations (with `Annotated` ranges) of a function's parameters, or of a class's `__init__` (a
    dataclass's fields); {} when they cannot be resolved (a name imported only for type checkers)."""
    annotated = target.__init__ if isinstance(target, type) else target
    try:
        return typing.get_type_hints(annotated, include_extras=True)
    except Exception:  # unresolvable annotations only lose the check, never the run
        return {}


def check_values(values: Mapping[str, Any], hints: Mapping[str, Any], prefix: str = "") -> None:
    """`check_value` for each value with an annotation in `hints`.

    Raises:
        ValueError: one line for the first wrong value.
    """
    for name, value in values.items():
        if name in hints:
            check_value(f"{prefix}{name}", hints[name], value)


def check_value(name: str, hint: Any, value: Any) -> None:
    """`value` (from YAML, the command line or code) must have the type `hint` and, for an annotated number, lie in
    its `Range`.

    Raises:
        ValueError: `<name>: got <value> (<type>), expected <type>` or `<name>: got <value>, expected <range>`.
    """
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    fitting = [option for option in options if value_fits(option, value)]
    if not fitting:
        raise ValueError(f"{name}: got {value!r} ({type(value).__name__}), expected {type_name(hint)}")
    ranges = [_range_of(option) for option in fitting]
    if all(bounds is not None and value not in bounds for bounds in ranges):
        option = fitting[0]
        raise ValueError(f"{name}: got {value!r}, expected {ranges[0].describe(_base(option) is int)}")  # type: ignore[union-attr]


def value_fits(hint: Any, value: Any) -> bool:
    """Whether `value` has the type `hint` (bool is not a number here; an int is a float); classes this module does
    not know (a config class, a Protocol) are left to the code that uses the value."""
    hint = _base(hint)
    if _is_union(hint):
        return any(value_fits(option, value) for option in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is Literal:
        return any(isinstance(value, type(option)) for option in typing.get_args(hint))
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, Iterable):  # a list from YAML is a ListConfig, a Sequence too
        return isinstance(value, Sequence) and not isinstance(value, str | bytes)
    if origin in (dict, Mapping):  # likewise a DictConfig
        return isinstance(value, Mapping)
    return True


def type_name(hint: Any) -> str:
    """How an annotation reads in an error line: `int`, `bool or null`, `one of both, question_only`, ..."""
    hint = _base(hint)
    if _is_union(hint):
        return " or ".join(dict.fromkeys(type_name(option) for option in typing.get_args(hint)))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is Literal:
        return f"one of {', '.join(map(str, typing.get_args(hint)))}"
    origin = typing.get_origin(hint) or hint
    if origin in (list, tuple, Sequence, Iterable):
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return getattr(origin, "__name__", str(origin))


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _base(hint: Any) -> Any:
    """`Annotated[int, Range(...)]` -> int; anything else unchanged."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _range_of(hint: Any) -> Range | None:
    if typing.get_origin(hint) is Annotated:
        return next((extra for extra in hint.__metadata__ if isinstance(extra, Range)), None)
    return None


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)
