"""Reading YAML strictly: safe types, duplicate keys rejected, ``inherit:`` merged, and every key's
``file:line`` recorded (``Marks``) so that a bad value can be reported where it was written."""
from __future__ import annotations

import os
from typing import Any

import yaml

from megatron_retro.config.base import ConfigError

Marks = dict[tuple[str, ...], str]  # key path -> "file:line"


def _collect_marks(node: yaml.Node, path: tuple[str, ...], source: str, marks: Marks) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = path + (str(key_node.value),)
            marks[key_path] = f"{source}:{key_node.start_mark.line + 1}"
            _collect_marks(value_node, key_path, source, marks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            marks[path + (str(i),)] = f"{source}:{item.start_mark.line + 1}"
            _collect_marks(item, path + (str(i),), source, marks)


def read_yaml(path: str, marks: Marks) -> dict:
    """The mapping of the YAML file ``path`` with its ``inherit:`` base merged underneath; ``marks``
    gets every key path's ``file:line``."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    data = load_yaml_text(text, path)
    node = yaml.compose(text)  # parses: load_yaml_text succeeded (used for the file:line marks)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of sections, got {type(data).__name__}")
    own: Marks = {}
    if node is not None:
        _collect_marks(node, (), path, own)
    base_name = data.pop("inherit", None)
    if base_name is not None:
        base_path = os.path.join(os.path.dirname(path), str(base_name))
        base = read_yaml(base_path, marks)
        data = _deep_merge(base, data)
    marks.update(own)
    return data


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (plain YAML
    keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, line: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first, self.line = key, first, line


def load_yaml_text(text: str, path: str) -> Any:
    """Parse YAML ``text`` read from ``path``: safe types only, duplicate keys rejected, errors as one
    ConfigError line ``path:line: ...``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}:{e.line}: duplicate key {e.key!r} (first given on line {e.first}; "
                          "YAML would silently keep only the last value)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None


def load_yaml_file(path: str, what: str = "YAML file") -> Any:
    """Read and parse a YAML file strictly (see :func:`load_yaml_text`); a missing file is one line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.__class__.__name__}") from None
    return load_yaml_text(text, path)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
