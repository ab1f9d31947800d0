"""Streaming readers for user-supplied task files, with one-line errors naming file and line.

- `iter_jsonl(path)` yields ``(lineno, obj)`` one line at a time (bytes decoded per line, so
  invalid UTF-8 is reported with its line); blank lines are skipped; a last line that does not
  parse and lacks its newline is reported as truncated.
- `JsonFile(path)` reads one whole JSON document once and walks it member by member with
  `json.JSONDecoder.raw_decode`: `members()` yields ``(key, value, lineno)`` of the top-level
  object and `array_items(key)` the items of one top-level array, so every record error can
  name the line the record starts on, and only one record is decoded into Python at a time
  (TriviaQA's ``{"Data": [...]}``, QASPER's ``{paper_id: {...}}``).
- `Fields(path, lineno, obj)` checks and fetches typed fields, naming the dotted field path.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, List, Optional, Tuple

from megatron_retro.errors import UserError

_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", int: "an integer",
               bool: "a boolean", float: "a number"}


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    for typ in (str, list, dict, int, float):
        if isinstance(v, typ):
            return _TYPE_NAMES[typ]
    return type(v).__name__


def _open_binary(path: str):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None


def iter_jsonl(path: str) -> Iterator[Tuple[int, Any]]:
    """(line number, decoded JSON value) for each non-blank line of a JSON-lines file."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{lineno}: invalid UTF-8 (byte {e.start + 1} of the "
                                f"line)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                hint = ("; the file looks truncated (last line has no newline)"
                        if not line.endswith("\n") else "")
                raise UserError(f"{path}:{lineno}: invalid JSON ({e.msg} at column "
                                f"{e.colno}){hint}") from None
            yield lineno, obj


def _bad_utf8_line(path: str) -> int:
    """Line number of the first invalid UTF-8 sequence (error path only: re-reads the file)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 0


class JsonFile:
    """One JSON document, decoded lazily member by member (see module docstring)."""

    def __init__(self, path: str):
        self.path = path
        _open_binary(path).close()              # file-not-found / directory errors
        try:
            with open(path, encoding="utf-8") as f:   # decoded in chunks: one copy in memory
                self.text = f.read()
        except UnicodeDecodeError:
            raise UserError(f"{path}:{_bad_utf8_line(path)}: invalid UTF-8") from None
        self._decoder = json.JSONDecoder()
        self._pos_cache = (0, 1)   # (offset, line) of the last line lookup; lookups go forward

    def line_of(self, pos: int) -> int:
        off, line = self._pos_cache
        if pos < off:
            off, line = 0, 1
        line += self.text.count("\n", off, pos)
        self._pos_cache = (pos, line)
        return line

    def _skip_ws(self, pos: int) -> int:
        n = len(self.text)
        while pos < n and self.text[pos] in " \t\r\n":
            pos += 1
        return pos

    def _hint(self) -> str:
        tail = self.text.rstrip()
        return "" if tail.endswith(("}", "]")) else "; the file looks truncated (it does not " \
            "end with '}' or ']')"

    def _fail(self, pos: int, what: str):
        if pos >= len(self.text):
            raise UserError(f"{self.path}:{self.line_of(len(self.text))}: invalid JSON "
                            f"(unexpected end of file): the file looks truncated")
        raise UserError(f"{self.path}:{self.line_of(pos)}: invalid JSON ({what}){self._hint()}")

    def _value(self, pos: int) -> Tuple[Any, int]:
        try:
            return self._decoder.raw_decode(self.text, pos)
        except json.JSONDecodeError as e:
            if e.pos >= len(self.text):
                self._fail(e.pos, e.msg)
            raise UserError(f"{self.path}:{e.lineno}: invalid JSON ({e.msg} at column "
                            f"{e.colno}){self._hint()}") from None

    def _expect(self, pos: int, char: str) -> int:
        pos = self._skip_ws(pos)
        if pos >= len(self.text) or self.text[pos] != char:
            self._fail(pos, f"expected {char!r}")
        return pos + 1

    def _container(self, pos: int, open_char: str, close_char: str, keyed: bool):
        """Yield (key or index, start offset, value) for each member of the container at pos,
        decoding one member at a time; afterwards ``self._end`` is the offset past it."""
        pos = self._skip_ws(self._expect(pos, open_char))
        if pos < len(self.text) and self.text[pos] == close_char:
            self._end = pos + 1
            return
        index = 0
        while True:
            pos = self._skip_ws(pos)
            key: Any = index
            if keyed:
                if pos >= len(self.text) or self.text[pos] != '"':
                    self._fail(pos, "expected a string key")
                key, pos = self._value(pos)
                pos = self._skip_ws(self._expect(pos, ":"))
            start = pos
            value, pos = self._value(pos)
            yield key, start, value
            pos = self._skip_ws(pos)
            if pos < len(self.text) and self.text[pos] == ",":
                pos += 1
                index += 1
                continue
            self._end = self._expect(pos, close_char)
            return

    def _top_object(self) -> int:
        pos = self._skip_ws(0)
        if pos >= len(self.text):
            self._fail(pos, "empty file")
        if self.text[pos] != "{":
            raise UserError(f"{self.path}:{self.line_of(pos)}: expected a JSON object at the "
                            f"top level")
        return pos

    def members(self) -> Iterator[Tuple[str, Any, int]]:
        """(key, value, line) of each member of the top-level object, decoded one by one."""
        for key, start, value in self._container(self._top_object(), "{", "}", keyed=True):
            yield key, value, self.line_of(start)

    def array_items(self, wanted: str) -> Iterator[Tuple[int, Any, int]]:
        """(index, item, line) of the items of the top-level object's array member
        ``wanted``: its items are decoded one at a time, the other members are skipped."""
        pos = self._skip_ws(self._expect(self._top_object(), "{"))
        found = False
        while pos < len(self.text) and self.text[pos] != "}":
            if self.text[pos] != '"':
                self._fail(pos, "expected a string key")
            key, pos = self._value(pos)
            pos = self._skip_ws(self._expect(pos, ":"))
            if key == wanted:
                found = True
                if pos >= len(self.text) or self.text[pos] != "[":
                    got = _json_type(self._value(pos)[0])
                    raise UserError(f"{self.path}:{self.line_of(pos)}: field {wanted!r} must "
                                    f"be a list, got {got}")
                for index, start, item in self._container(pos, "[", "]", keyed=False):
                    yield index, item, self.line_of(start)
                pos = self._end
            else:
                _, pos = self._value(pos)
            pos = self._skip_ws(pos)
            if pos < len(self.text) and self.text[pos] == ",":
                pos = self._skip_ws(pos + 1)
            elif pos >= len(self.text) or self.text[pos] != "}":
                self._fail(pos, "expected ',' or '}'")
        self._expect(pos, "}")
        if not found:
            raise UserError(f"{self.path}: missing top-level field {wanted!r}")


class Fields:
    """Typed access to one record's fields; errors name ``file:line: field 'a.b[2]'``."""

    def __init__(self, path: str, lineno: int, obj: Any, prefix: str = ""):
        self.path, self.lineno, self.obj, self.prefix = path, lineno, obj, prefix
        if not isinstance(obj, dict):
            self.fail(f"expected a JSON object{self._at('')}, got {_json_type(obj)}")

    def _at(self, key: str) -> str:
        name = f"{self.prefix}.{key}" if self.prefix and key else (self.prefix or key)
        return f" in field {name!r}" if name else ""

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, msg: str):
        raise UserError(f"{self.path}:{self.lineno}: {msg}")

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def get(self, key: str, typ, optional: bool = False):
        if key not in self.obj or (optional and self.obj[key] is None):
            if optional:
                return None
            self.fail(f"missing field {self.name(key)!r}")
        v = self.obj[key]
        ok = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
        if typ is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok:
            self.fail(f"field {self.name(key)!r} must be {_TYPE_NAMES.get(typ, typ)}, "
                      f"got {_json_type(v)}")
        return v

    def text(self, key: str, optional: bool = False) -> Optional[str]:
        """A non-empty (after stripping) string field."""
        v = self.get(key, str, optional)
        if v is None:
            return None
        if not v.strip():
            self.fail(f"field {self.name(key)!r} is empty")
        return v

    def texts(self, key: str, allow_empty_list: bool = False) -> List[str]:
        """A list of non-empty strings."""
        v = self.get(key, list)
        if not v and not allow_empty_list:
            self.fail(f"field {self.name(key)!r} is an empty list")
        for i, s in enumerate(v):
            if not isinstance(s, str):
                self.fail(f"field {self.name(key)}[{i}] must be a string, got {_json_type(s)}")
            if not s.strip():
                self.fail(f"field {self.name(key)}[{i}] is an empty string")
        return v

    def sub(self, key: str) -> "Fields":
        return Fields(self.path, self.lineno, self.get(key, dict), self.name(key))

    def items(self, key: str) -> List["Fields"]:
        """A list of objects, each wrapped as Fields named ``key[i]``."""
        out = []
        for i, item in enumerate(self.get(key, list)):
            out.append(Fields(self.path, self.lineno, item, f"{self.name(key)}[{i}]"))
        return out


def dedup(answers: List[str]) -> List[str]:
    """Stripped answers, duplicates dropped, first occurrence order kept."""
    seen, out = set(), []
    for a in answers:
        a = a.strip()
        if a and a not in seen:
            seen.add(a)
            out.append(a)
    return out
