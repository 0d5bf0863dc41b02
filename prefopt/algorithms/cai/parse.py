"""Load a constitution from YAML (format in ``default_constitution.yaml``).

Every error is a :class:`ConstitutionError` whose message names the file, the entry
(``principles[2]``, ``few_shot[0]``) and the field, e.g.::

    my.yaml: principles[2]: field 'critique': must not be empty

The YAML is read with a ``SafeLoader`` subclass that also rejects duplicated mapping keys
(plain ``yaml.safe_load`` silently keeps the last one).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from prefopt.algorithms.cai.constitution import Constitution, FewShot, Principle
from prefopt.errors import ConstitutionError

TOP_KEYS = ("name", "principles", "few_shot")
PRINCIPLE_KEYS = ("name", "critique", "revision", "comparison")
FEW_SHOT_KEYS = ("principle", "prompt", "response", "critique", "revision")
DEFAULT_CONSTITUTION_PATH = Path(__file__).with_name("default_constitution.yaml")


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises on a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)   # resolve '<<' merge keys first, as SafeLoader does
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:        # unhashable key: let SafeLoader report it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first given on line {first.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _fail(source: str, entry: str | None, field: str | None, message: str) -> ConstitutionError:
    """A ConstitutionError reading '<source>: <entry>: field '<field>': <message>'."""
    where = [source]
    if entry is not None:
        where.append(entry)
    if field is not None:
        where.append(f"field '{field}'")
    return ConstitutionError(": ".join(where) + ": " + message)


def _suggest(word: str, options: tuple[str, ...] | list[str]) -> str:
    """'; did you mean 'x'?' for the closest option (difflib), else the list of options."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return "; expected one of: " + ", ".join(f"'{o}'" for o in options)


def _check_keys(data: dict, valid: tuple[str, ...], source: str, entry: str | None) -> None:
    """Reject keys not in ``valid``, suggesting the closest valid one."""
    for key in data:
        if key not in valid:
            raise _fail(source, entry, str(key), "unknown key" + _suggest(str(key), valid))


def _text(data: dict, key: str, source: str, entry: str | None,
          required: bool = True) -> str | None:
    """The non-empty string ``data[key]`` with surrounding whitespace removed."""
    if key not in data or (data[key] is None and not required):
        if required:
            raise _fail(source, entry, key, "missing")
        return None
    value = data[key]
    if not isinstance(value, str):
        raise _fail(source, entry, key, f"must be a string, got {_type(value)}")
    if not value.strip():
        raise _fail(source, entry, key, "must not be empty")
    return value.strip()


def _type(value: Any) -> str:
    """YAML-ish name of a value's type for messages ('null' rather than 'NoneType')."""
    return "null" if value is None else type(value).__name__


def _mapping(value: Any, source: str, entry: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(source, entry, None, f"must be a mapping, got {_type(value)}")
    return value


def _list(data: dict, key: str, source: str, required: bool) -> list:
    if key not in data or (data[key] is None and not required):
        if required:
            raise _fail(source, None, key, "missing")
        return []
    value = data[key]
    if not isinstance(value, list):
        raise _fail(source, None, key, f"must be a list, got {_type(value)}")
    if required and not value:
        raise _fail(source, None, key, "must not be empty")
    return value


def _principles(items: list, source: str) -> tuple[Principle, ...]:
    """Parse ``principles``; names must be unique."""
    out: list[Principle] = []
    first_at: dict[str, int] = {}
    for i, item in enumerate(items):
        entry = f"principles[{i}]"
        item = _mapping(item, source, entry)
        _check_keys(item, PRINCIPLE_KEYS, source, entry)
        fields = {k: _text(item, k, source, entry) for k in PRINCIPLE_KEYS}
        name = fields["name"]
        if name in first_at:
            raise _fail(source, entry, "name",
                        f"duplicate principle name '{name}' (first at principles[{first_at[name]}])")
        first_at[name] = i
        out.append(Principle(**fields))
    return tuple(out)


def _few_shots(items: list, names: list[str], source: str) -> tuple[FewShot, ...]:
    """Parse ``few_shot``; ``principle``, when given, must name a principle."""
    out: list[FewShot] = []
    for i, item in enumerate(items):
        entry = f"few_shot[{i}]"
        item = _mapping(item, source, entry)
        _check_keys(item, FEW_SHOT_KEYS, source, entry)
        principle = _text(item, "principle", source, entry, required=False)
        if principle is not None and principle not in names:
            raise _fail(source, entry, "principle",
                        f"unknown principle '{principle}'" + _suggest(principle, names))
        fields = {k: _text(item, k, source, entry) for k in FEW_SHOT_KEYS if k != "principle"}
        out.append(FewShot(principle=principle, **fields))
    return tuple(out)


def parse_constitution(data: Any, source: str = "<constitution>") -> Constitution:
    """Validate an already-loaded YAML document and build the :class:`Constitution`.

    ``source`` names the file in error messages.
    """
    if data is None:
        raise _fail(source, None, None, "empty document; expected a mapping with "
                    "'name' and 'principles'")
    data = _mapping(data, source, "top level")
    _check_keys(data, TOP_KEYS, source, None)
    name = _text(data, "name", source, None)
    principles = _principles(_list(data, "principles", source, required=True), source)
    few_shot = _few_shots(_list(data, "few_shot", source, required=False),
                          [p.name for p in principles], source)
    return Constitution(name=name, principles=principles, few_shot=few_shot)


def _read_text(path: Path) -> str:
    """The file's text as UTF-8 (a leading BOM is dropped)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConstitutionError(f"{path}: constitution file not found") from None
    except OSError as e:
        raise ConstitutionError(f"{path}: cannot read constitution file ({e.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConstitutionError(
            f"{path}: line {line}: not valid UTF-8 (byte {e.start}: {e.reason})") from None


def load_constitution(path: str | Path) -> Constitution:
    """Read and validate a constitution YAML file (safe loader, duplicate keys rejected)."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConstitutionError(f"{path}: {line}invalid YAML: {problem}") from None
    except RecursionError:
        raise ConstitutionError(f"{path}: invalid YAML: nested too deeply") from None
    return parse_constitution(data, str(path))


def load_default_constitution() -> Constitution:
    """The constitution shipped with prefopt (``default_constitution.yaml``)."""
    return load_constitution(DEFAULT_CONSTITUTION_PATH)
