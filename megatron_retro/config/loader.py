"""Loading: YAML (with line marks) and ``section.key=value`` overrides -> type-checked, validated
dataclasses; errors name the file:line, the field and the constraint."""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Optional

import yaml

from megatron_retro.config.base import ConfigError
from megatron_retro.config.run import RunConfig
from megatron_retro.config.yaml_files import Marks, read_yaml

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return value  # built by _build
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _build(cls: type, data: dict, path: tuple[str, ...], marks: Marks) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key_path = path + (str(key),)
        dotted = ".".join(key_path)
        where = f"{marks[key_path]}: {dotted}" if key_path in marks else dotted
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where}: unknown key (known keys{' of ' + '.'.join(path) if path else ''}: {known})")
        tp = hints[key]
        value = _coerce(value, tp, where)
        if dataclasses.is_dataclass(tp):
            value = _build(tp, value, key_path, marks)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # Point at the line of the field the message starts with, when it came from a file.
        message = str(e)
        key_path = tuple(message.split("=", 1)[0].split(":", 1)[0].strip().split("."))
        if key_path in marks and not message.startswith(marks[key_path]):
            raise ConfigError(f"{marks[key_path]}: {message}") from None
        raise


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``section.key=value`` -> (("section", "key"), parsed YAML scalar)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return tuple(key.split(".")), value


def apply_overrides(data: dict, overrides: list[str], marks: Optional[Marks] = None) -> dict:
    for text in overrides:
        key_path, value = parse_override(text)
        node = data
        for part in key_path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[key_path[-1]] = value
        if marks is not None:
            marks[key_path] = f"override '{text}'"
    return data


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Read ``path`` (optional), apply ``section.key=value`` overrides, validate, return a RunConfig."""
    marks: Marks = {}
    data = read_yaml(path, marks) if path else {}
    apply_overrides(data, list(overrides or []), marks)
    return config_from_dict(data, marks)


def config_from_dict(data: dict, marks: Optional[Marks] = None) -> RunConfig:
    """Build and validate a RunConfig from nested dicts (``marks`` maps key paths to file:line)."""
    return _build(RunConfig, data, (), marks or {})


def load_dataclass(cls: type, path: str, overrides: Optional[list[str]] = None) -> Any:
    """Read a YAML file (with ``inherit:`` and overrides) into the dataclass ``cls``, errors at file:line.

    Fields typed ``list[Any]`` stay plain lists; ``build_item`` builds their entries."""
    marks: Marks = {}
    data = read_yaml(path, marks)
    apply_overrides(data, list(overrides or []), marks)
    obj = _build(cls, data, (), marks)
    obj._marks = marks
    return obj


def build_item(cls: type, data: Any, path: tuple[str, ...], marks: Marks) -> Any:
    """One entry of a list-of-mappings field, built and validated like a section."""
    where = marks.get(path, ".".join(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {'.'.join(path)}: expected a mapping, got {type(data).__name__} {data!r}")
    try:
        return _build(cls, data, path, marks)
    except ConfigError as e:
        message = str(e)
        if path in marks and not re.match(r"^\S+:\d+: ", message):
            name = message.split("=", 1)[0].split(":", 1)[0].strip().split(".")[-1]
            raise ConfigError(f"{marks.get(path + (name,), marks[path])}: {message}") from None
        raise


def field_help(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) of every field, for ``megatron-retro config --fields``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(field_help(tp, f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            rows.append((f"{prefix}{f.name}", f.metadata.get("help", ""), default))
    return rows
