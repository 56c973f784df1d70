"""Configuration checked before anything is built or read.

One rule for every component a run configures (data, model, optimizer, scheduler, trainer,
callbacks, logger): each key must be an argument of the class it configures, and its value must
have that argument's annotated type. The rule reads the classes' own signatures, so it cannot fall
behind them; the limits of a value (a probability in [0, 1), a positive batch) stay with each class.
"""

from __future__ import annotations

import collections.abc
import difflib
import importlib
import inspect
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from digitrec.errors import ConfigError

_PLAIN = (bool, int, float, str, type(None))
_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
_MAPPINGS = (dict, collections.abc.Mapping)
_RESOLVED_BY_DIGITREC = {"trainer": {"precision"}}  # `auto` is digitrec's; Lightning checks what it resolves to


def check_config(cfg: DictConfig) -> None:
    """Raise one `ConfigError` naming the first key that its class does not take or that has the wrong type."""
    for path, component in _components(cfg):
        _check_arguments(path, component)


def check_command_line(config_dir: Path, config_name: str, arguments: Sequence[str]) -> None:
    """A mistyped key on the command line (`trainer.max_epoch=3`) is one `ConfigError` that names the
    key meant, instead of Hydra's advice to add the typo as a new key with `+`.

    Composes the config as the entry point will (about 0.1 s); sweeps (`-m`) are left to Hydra.
    """
    if any(a in ("-m", "--multirun") or a.startswith("-") for a in arguments):
        return
    overrides = list(arguments)
    try:
        _compose(config_dir, config_name, overrides)
        return
    except ConfigCompositionException as e:
        unknown = re.match(r"Could not override '([^']+)'", str(e))
    if not unknown:
        return  # Hydra says what else is wrong
    key = unknown.group(1)
    try:
        cfg = _compose(config_dir, config_name, [o for o in overrides if not o.startswith(f"{key}=")])
    except ConfigCompositionException:
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    close = difflib.get_close_matches(leaf, list(node.keys()), n=1) if isinstance(node, DictConfig) else []
    if close:
        meant = f"{parent}.{close[0]}" if parent else close[0]
        raise ConfigError(
            f"{key} is not a key of the configuration; did you mean {meant}? (To add a new key: +{key}=...)"
        )


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def _components(cfg: DictConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    top = {k: cfg[k] for k in cfg if k != "hydra" and not OmegaConf.is_config(cfg[k])}
    if "seed" in top:  # the training config (evaluate.py's has other keys)
        yield "", {"_target_": "digitrec.training.run.RunSettings", **top}
    for group in ("data", "model", "optimizer", "scheduler", "module"):
        if cfg.get(group) is not None:
            yield group, _plain(cfg[group])
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            if node is not None:
                yield f"{group}.{name}", _plain(node)
    if cfg.get("trainer") is not None:
        yield "trainer", {"_target_": "lightning.pytorch.Trainer", **_plain(cfg.trainer)}


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def _check_arguments(path: str, component: Mapping[str, Any]) -> None:
    if "_target_" not in component:
        return
    target = _locate(component["_target_"])
    if target is None:
        raise ConfigError(f"{path}._target_={component['_target_']!r} cannot be imported; check its spelling.")
    parameters = _parameters(target)
    if parameters is None:
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    hints = _hints(target)
    skip = _RESOLVED_BY_DIGITREC.get(path, set())
    for key, value in component.items():
        if key.startswith("_") or key in skip:
            continue
        if key not in parameters:
            if takes_any:
                continue
            close = difflib.get_close_matches(key, [k for k in parameters if k not in ("self", "params")], n=1)
            hint = f"; did you mean {_key(path, close[0])}?" if close else f"; it takes {', '.join(parameters)}."
            owner = _name(target) if path else "the training config (conf/train.yaml)"
            raise ConfigError(f"{_key(path, key)} is not an argument of {owner}{hint}")
        expected = hints.get(key)
        if expected is not None and not _matches(value, expected):
            raise ConfigError(f"{_key(path, key)} must be {_describe(expected)}, got {value!r}.")


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _locate(dotted: str) -> Any:
    """The object a `_target_` names (the longest importable module, then attributes), or None."""
    parts = str(dotted).split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                found = getattr(found, name)
        except AttributeError:
            return None
        return found
    return None


def _parameters(target: Any) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins without a signature: nothing to check against
        return None


def _hints(target: Any) -> dict[str, Any]:
    function = target.__init__ if isinstance(target, type) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # annotations that name what only a type checker imports: check the keys alone
        return {}


def _name(target: Any) -> str:
    return getattr(target, "__qualname__", str(target))


def _matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value (from YAML or the command line) fits a type annotation.

    Classes a config cannot spell (tensors, paths, callables, ...) accept anything: only the plain
    types are checked.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in _SEQUENCES or hint in _SEQUENCES:
        return isinstance(value, (list, tuple))
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return isinstance(value, dict)
    return not isinstance(value, _PLAIN) or not (isinstance(hint, type) and hint in _PLAIN)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    if origin in _SEQUENCES or hint in _SEQUENCES:
        return "a list"
    if origin in _MAPPINGS or hint in _MAPPINGS:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))
