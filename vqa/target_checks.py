"""Checks of a Hydra `_target_` node (the objective, its reward, any nested one) against the class or function it
names: its keys against the parameters, each value against the parameter's annotated type and range
(`vqa.model.settings.check_value`), required parameters, a callable setting against its Protocol, and the target's
own `check_options`. Each mistake is one line (ConfigError) naming the key; `vqa.config_checks` calls them before
anything is built.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from typing import Any

from hydra._internal.utils import _locate
from omegaconf import DictConfig, OmegaConf

from vqa.errors import ConfigError, one_line
from vqa.model.settings import annotations_of, check_value

VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def plain(value: Any) -> Any:
    """A Hydra node as plain Python (lists and dicts); other values unchanged."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def check_target_node(node: DictConfig, key: str) -> None:
    """A Hydra `_target_` node (`objective`, `objective.reward`, any nested one) against what its target takes: every
    key a parameter of it (one line listing the accepted ones otherwise), every required parameter given (unless
    `_partial_`), every value of the parameter's annotated type and range, nested nodes alike; then the target's own
    `check_options(options)`, when it has one, for rules across options. A nested node whose parameter is annotated
    with a callable Protocol (`vqa.training.rewards.Reward`) must be callable with the Protocol's keyword arguments.

    Raises:
        ConfigError: one line naming `key.option`.
    """
    target = imported_target(node, key)
    path = qualified_name(target)
    parameters = called_parameters(target)
    named = [name for name, parameter in parameters.items() if parameter.kind not in VARIADIC]
    given = {name: node[name] for name in node if not is_hydra_key(name)}
    for name in given:
        if name not in named and not takes_any_keyword(parameters):
            close = difflib.get_close_matches(name, named, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{key}.{name}: not an option of {path}; {hint}accepted: {', '.join(named) or 'none'}")
    if not node.get("_partial_", False):
        for name in named:
            if name not in given and parameters[name].default is parameters[name].empty:
                raise ConfigError(f"{key}.{name}: required by {path} and not set")
    hints = annotations_of(target)
    options = {
        name: parameter.default for name, parameter in parameters.items() if parameter.default is not parameter.empty
    }
    for name, value in given.items():
        if is_target_node(value):
            check_target_node(value, f"{key}.{name}")
            check_callable_as(value, hints.get(name), f"{key}.{name}")
            options.pop(name, None)
            continue
        try:
            check_value(f"{key}.{name}", hints.get(name, Any), plain(value))
        except ValueError as error:
            raise ConfigError(str(error)) from None
        options[name] = plain(value)
    check_options = getattr(target, "check_options", None)
    if callable(check_options):
        check_options(options)


def check_callable_as(node: DictConfig, hint: Any, key: str) -> None:
    """A nested target node whose parameter is annotated with a callable Protocol (`Reward | None`) must give what
    the Protocol's keyword arguments can call: a `_partial_` function taking them, or a class whose instances'
    `__call__` does; and it may need nothing else that the config does not set.

    Raises:
        ConfigError: one line naming the node, its target and the keywords it lacks.
    """
    protocol = next((option for option in union_options(hint) if is_call_protocol(option)), None)
    if protocol is None:
        return
    target = imported_target(node, key)
    path = qualified_name(target)
    partial = bool(node.get("_partial_", False))
    if partial:
        called = called_parameters(target)
    elif isinstance(target, type):
        if not any("__call__" in vars(klass) for klass in target.__mro__[:-1]):  # [:-1]: not object's
            raise ConfigError(f"{key}: {path} instances are not callable; expected a {qualified_name(protocol)}")
        called = dict(list(inspect.signature(target.__call__).parameters.items())[1:])  # without self
    else:
        return  # a factory function called without arguments: what it returns is known only then
    keywords = list(called_parameters(protocol.__call__))
    if not takes_any_keyword(called):
        missing = [
            name for name in keywords if name not in called or called[name].kind is inspect.Parameter.POSITIONAL_ONLY
        ]
        if missing:
            raise ConfigError(
                f"{key}: {path} does not take {', '.join(missing)}; a {qualified_name(protocol)} is called with the "
                f"keyword arguments {', '.join(keywords)}"
            )
    bound = {name for name in node if not is_hydra_key(name)} if partial else set()
    for name, parameter in called.items():
        if parameter.kind not in VARIADIC and parameter.default is parameter.empty and name not in {*keywords, *bound}:
            raise ConfigError(
                f"{key}.{name}: required by {path}, and neither set in the config nor among the keyword arguments "
                f"a {qualified_name(protocol)} is called with ({', '.join(keywords)})"
            )


def imported_target(node: DictConfig, key: str) -> Any:
    """The object a node's `_target_` names; one line (ConfigError) naming the key when it cannot be imported."""
    path = node.get("_target_")
    if not isinstance(path, str):
        raise ConfigError(f"{key}._target_: got {path!r}, expected the import path of a class or function")
    try:
        # Hydra's own locator: hydra.utils.get_object would also log the failure, a second line on stderr.
        return _locate(path)
    except Exception as error:  # whatever the import raised (ImportError, AttributeError, ...)
        raise ConfigError(f"{key}._target_: cannot be imported ({one_line(str(error))})") from None


def called_parameters(target: Any) -> dict[str, inspect.Parameter]:
    """The parameters a call of `target` takes (a class: its `__init__`'s; a method: without self)."""
    parameters = dict(inspect.signature(target).parameters)
    parameters.pop("self", None)
    return parameters


def takes_any_keyword(parameters: Any) -> bool:
    values = parameters.values() if isinstance(parameters, dict | types.MappingProxyType) else parameters
    return any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in values)


def union_options(hint: Any) -> tuple[Any, ...]:
    if hint is None:
        return ()
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def is_call_protocol(hint: Any) -> bool:
    """A `typing.Protocol` class that defines `__call__`: the signature a callable setting must accept."""
    return isinstance(hint, type) and getattr(hint, "_is_protocol", False) and "__call__" in vars(hint)


def is_target_node(value: Any) -> bool:
    return isinstance(value, DictConfig) and "_target_" in value


def is_hydra_key(key: Any) -> bool:
    """Hydra's own keys of a node (`_target_`, `_partial_`, `_recursive_`, `_convert_`, `_args_`)."""
    return isinstance(key, str) and key.startswith("_") and key.endswith("_")


def qualified_name(target: Any) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
