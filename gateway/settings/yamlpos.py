"""YAML read node by node, so that every configuration problem can name its line and field.

``yaml.safe_load`` forgets where values came from and stops at the first surprise. Composing to
nodes and walking them keeps each node's position, and lets one pass collect every problem.
"""

from __future__ import annotations

import difflib
import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.errors import ConfigError

E = TypeVar("E", bound=enum.Enum)

_TAG = "tag:yaml.org,2002:"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KINDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "nothing (null)",
    "timestamp": "a date",
}


def join(path: str, key: str) -> str:
    """``tenants.acme`` for plain keys; ``pricing["gpt-4.1"]`` where a dot would mislead."""
    if not _PLAIN_KEY.fullmatch(key):
        return f'{path}["{key}"]'
    return f"{path}.{key}" if path else key


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _compose(text: str) -> Node | None:
    """libyaml's parser when PyYAML has it: a 100,000-key file composes several times faster
    and with a fraction of the memory. A file it refuses is parsed again by the pure-Python
    parser, whose messages (and positions) are the ones ops see."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            node: Node | None = yaml.compose(text, Loader=fast)
            return node
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def line_of(node: Node) -> int | None:
    return node.start_mark.line + 1 if node.start_mark is not None else None


def kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    short = node.tag.removeprefix(_TAG)
    return _KINDS.get(short, f"a {node.tag!r} value")


def suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


class Reader:
    """Collects every problem of one file.

    Getters return ``None`` for a value that is absent or invalid (the problem is recorded), so
    builders can go on and find the next problem; a caller discards whatever was built when
    ``errors`` is not empty.
    """

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self.errors: list[ConfigError] = []
        self._yaml = yaml.SafeLoader("")  # only its resolver and scalar constructors are used

    def error(self, node: Node | None, path: str, message: str) -> None:
        line = line_of(node) if node is not None else None
        self.errors.append(ConfigError(self.source, line, path, message))

    def document(self, text: str, allowed: Sequence[str]) -> Fields | None:
        """The top-level mapping, or ``None`` when the text is not YAML or not a mapping."""
        try:
            root = _compose(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = " ".join(p for p in (exc.context, exc.problem) if p)
            self._syntax(mark.line + 1 if mark is not None else None, problem)
            return None
        except yaml.reader.ReaderError as exc:
            self._syntax(text.count("\n", 0, exc.position) + 1, str(exc))
            return None
        except RecursionError:
            self._syntax(None, "nested too deeply")
            return None
        if root is None:
            self.errors.append(ConfigError(self.source, 1, "(document)", "the file is empty"))
            return None
        if not isinstance(root, MappingNode):
            self.error(root, "(document)", f"expected a mapping at the top level, got {kind(root)}")
            return None
        return self.fields(root, "", allowed)

    def _syntax(self, line: int | None, problem: str) -> None:
        self.errors.append(ConfigError(self.source, line, "(syntax)", f"invalid YAML: {problem}"))

    def pairs(self, node: Node, path: str) -> list[tuple[str, Node, Node]] | None:
        """A mapping's entries in file order, with merge keys (``<<: *base``) expanded."""
        if not isinstance(node, MappingNode):
            self.error(node, path, f"expected a mapping, got {kind(node)}")
            return None
        self._check_duplicates(node, path)
        try:
            self._yaml.flatten_mapping(node)
        except ConstructorError as exc:
            self.error(node, path, f"invalid merge key: {exc.problem}")
            return None
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value in node.value:
            if isinstance(key_node, ScalarNode):
                entries[key_node.value] = (key_node, value)
            else:
                self.error(key_node, path, f"expected a plain key, got {kind(key_node)}")
        return [(key, key_node, value) for key, (key_node, value) in entries.items()]

    def _check_duplicates(self, node: MappingNode, path: str) -> None:
        seen: dict[str, Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _TAG + "merge":
                continue
            first = seen.setdefault(key_node.value, key_node)
            if first is not key_node:
                message = f"duplicate key (first at line {line_of(first)})"
                self.error(key_node, join(path, key_node.value), message)

    def fields(
        self, node: Node, path: str, allowed: Sequence[str], at: Node | None = None
    ) -> Fields | None:
        """A mapping with a fixed set of keys; ``at`` is where a missing key is reported."""
        pairs = self.pairs(node, path)
        if pairs is None:
            return None
        values: dict[str, Node] = {}
        for key, key_node, value in pairs:
            if key not in allowed:
                self.error(key_node, join(path, key), _unknown(key, allowed))
            elif not _is_null(value):  # "key:" with nothing after it means "not set"
                values[key] = value
        return Fields(self, node, path, values, at or node)

    def sequence(self, node: Node, path: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, path, f"expected a list, got {kind(node)}")
            return None
        return list(node.value)

    def string(self, node: Node, path: str, *, empty_ok: bool = False) -> str | None:
        scalar = self._scalar(node, path, "a string", retag=False)
        if scalar is None:
            return None
        if scalar.tag != _TAG + "str":
            self.error(node, path, f"expected a string, got {kind(scalar)}; quote it")
            return None
        if not scalar.value and not empty_ok:
            self.error(node, path, "must not be empty")
            return None
        return str(scalar.value)

    def strings(self, node: Node, path: str, *, empty_ok: bool = False) -> tuple[str, ...] | None:
        items = self.sequence(node, path)
        if items is None:
            return None
        if not items and not empty_ok:
            self.error(node, path, "must not be an empty list")
        values = [self.string(item, index(path, i)) for i, item in enumerate(items)]
        return tuple(v for v in values if v is not None)

    def integer(
        self, node: Node, path: str, *, minimum: int, maximum: int | None = None
    ) -> int | None:
        scalar = self._scalar(node, path, "an integer", retag=True)
        if scalar is None:
            return None
        if scalar.tag != _TAG + "int":
            self.error(node, path, f"expected an integer, got {kind(scalar)}")
            return None
        value: int | None = self._construct(scalar, path, self._yaml.construct_yaml_int,
                                            "an integer")
        if value is None:
            return None
        if value < minimum:
            self.error(node, path, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.error(node, path, f"must be <= {maximum}, got {value}")
        return value

    def number(
        self, node: Node, path: str, *, minimum: float, maximum: float | None, positive: bool
    ) -> float | None:
        scalar = self._scalar(node, path, "a number", retag=True)
        if scalar is None:
            return None
        if scalar.tag == _TAG + "int":
            whole = self._construct(scalar, path, self._yaml.construct_yaml_int, "a number")
            if whole is None:
                return None
            try:
                value = float(whole)
            except OverflowError:
                value = math.inf
        elif scalar.tag == _TAG + "float":
            fraction = self._construct(scalar, path, self._yaml.construct_yaml_float, "a number")
            if fraction is None:
                return None
            value = fraction
        else:
            self.error(node, path, f"expected a number, got {kind(scalar)}")
            return None
        if not math.isfinite(value):
            self.error(node, path, "must be a finite number")
        elif positive and value <= 0:
            self.error(node, path, f"must be > 0, got {value:g}")
        elif value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else ""
            self.error(node, path, f"must be {bound or f'>= {minimum:g}'}, got {value:g}")
        return value

    def boolean(self, node: Node, path: str) -> bool | None:
        scalar = self._scalar(node, path, "a boolean", retag=True)
        if scalar is None:
            return None
        if scalar.tag != _TAG + "bool":
            self.error(node, path, f"expected true or false, got {kind(scalar)}")
            return None
        flag: bool | None = self._construct(scalar, path, self._yaml.construct_yaml_bool,
                                            "true or false")
        return flag

    def _construct(self, scalar: ScalarNode, path: str, construct: Callable[[ScalarNode], Any],
                   what: str) -> Any:
        """PyYAML tags some text as a number (``0x_``, ``!!int abc``) it cannot convert."""
        try:
            return construct(scalar)
        except (ValueError, KeyError, TypeError):
            self.error(scalar, path, f"expected {what}; this value cannot be read as one")
            return None

    def choice(self, node: Node, path: str, choices: type[E]) -> E | None:
        value = self.string(node, path)
        if value is None:
            return None
        try:
            return choices(value)
        except ValueError:
            names = [str(c.value) for c in choices]
            message = f"must be one of {' | '.join(names)}, got {value!r}{suggest(value, names)}"
            self.error(node, path, message)
            return None

    def _scalar(self, node: Node, path: str, want: str, *, retag: bool) -> ScalarNode | None:
        """The scalar after ``${NAME}`` substitution.

        ``retag`` re-resolves an unquoted substituted value, so ``port: ${PORT}`` can be a
        number while ``api_key: ${KEY}`` stays a string whatever the key looks like.
        """
        if not isinstance(node, ScalarNode):
            self.error(node, path, f"expected {want}, got {kind(node)}")
            return None
        if node.tag != _TAG + "str" or "${" not in node.value:
            return node
        value = self._substitute(node, path)
        if value is None:
            return None
        tag = node.tag
        if retag and not node.style:  # plain: None from PyYAML's parser, "" from libyaml's
            # PyYAML's resolver is untyped in the stubs; it returns the tag as a str.
            tag = str(self._yaml.resolve(ScalarNode, value, (True, False)))  # type: ignore[no-untyped-call]
        return ScalarNode(tag, value, node.start_mark, node.end_mark, style=node.style)

    def _substitute(self, node: ScalarNode, path: str) -> str | None:
        text: str = node.value
        if "${" in _VAR.sub("", text):
            self.error(node, path, "malformed variable reference; write ${NAME}")
            return None
        missing = [name for name in dict.fromkeys(_VAR.findall(text)) if name not in self.env]
        for name in missing:
            self.error(node, path, f"environment variable {name!r} is not set")
        if missing:
            return None
        return _VAR.sub(lambda m: self.env[m.group(1)], text)


def _unknown(key: str, allowed: Sequence[str]) -> str:
    hint = suggest(key, allowed) or f"; expected one of: {', '.join(allowed)}"
    return f"unknown field {key!r}{hint}"


class Fields:
    """One mapping with a fixed set of keys, read by name; absent keys read as ``None``."""

    def __init__(
        self, reader: Reader, node: Node, path: str, values: dict[str, Node], at: Node
    ) -> None:
        self.reader = reader
        self.node = node
        self.values = values
        self._path = path
        self._at = at

    def path(self, name: str | None = None) -> str:
        return self._path if name is None else join(self._path, name)

    def has(self, name: str) -> bool:
        return name in self.values

    def error(self, name: str | None, message: str) -> None:
        node = self.values.get(name, self._at) if name is not None else self._at
        self.reader.error(node, self.path(name), message)

    def require(self, *names: str) -> None:
        for name in names:
            if name not in self.values:
                self.reader.error(self._at, self.path(name), "missing required field")

    def fields(self, name: str, allowed: Sequence[str]) -> Fields | None:
        node = self.values.get(name)
        return None if node is None else self.reader.fields(node, self.path(name), allowed)

    def pairs(self, name: str) -> list[tuple[str, Node, Node]] | None:
        node = self.values.get(name)
        return [] if node is None else self.reader.pairs(node, self.path(name))

    def sequence(self, name: str) -> list[Node]:
        node = self.values.get(name)
        return [] if node is None else self.reader.sequence(node, self.path(name)) or []

    def string(self, name: str, *, empty_ok: bool = False) -> str | None:
        node = self.values.get(name)
        if node is None:
            return None
        return self.reader.string(node, self.path(name), empty_ok=empty_ok)

    def strings(self, name: str, *, empty_ok: bool = False) -> tuple[str, ...] | None:
        node = self.values.get(name)
        if node is None:
            return None
        return self.reader.strings(node, self.path(name), empty_ok=empty_ok)

    def one_or_more(self, name: str) -> tuple[str, ...] | None:
        """A string, or a non-empty list of strings: one value or several, in order."""
        node = self.values.get(name)
        if node is None:
            return None
        if isinstance(node, ScalarNode):
            value = self.reader.string(node, self.path(name))
            return None if value is None else (value,)
        return self.reader.strings(node, self.path(name))

    def integer(self, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
        node = self.values.get(name)
        if node is None:
            return None
        return self.reader.integer(node, self.path(name), minimum=minimum, maximum=maximum)

    def number(
        self,
        name: str,
        *,
        minimum: float = 0.0,
        maximum: float | None = None,
        positive: bool = False,
    ) -> float | None:
        node = self.values.get(name)
        if node is None:
            return None
        return self.reader.number(
            node, self.path(name), minimum=minimum, maximum=maximum, positive=positive
        )

    def boolean(self, name: str) -> bool | None:
        node = self.values.get(name)
        return None if node is None else self.reader.boolean(node, self.path(name))

    def choice(self, name: str, choices: type[E]) -> E | None:
        node = self.values.get(name)
        return None if node is None else self.reader.choice(node, self.path(name), choices)
