"""YAML read and written the way LLaMA-Factory reads it.

LLaMA-Factory loads configs with OmegaConf, whose float rule (YAML 1.2 style) reads `5e-5` as a float where PyYAML's
YAML 1.1 rule reads the string "5e-5". We parse with that same rule, and we write floats in a form both parsers agree
on (`5.0e-05`), and quote strings that either parser would take for a number.

A document is at most MAX_BYTES long and nested at most MAX_DEPTH levels deep (`[[[[...` or `- - - -...`): PyYAML
composes nested nodes recursively, so without the cap 10,000 levels end in a RecursionError instead of a message.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from backend.errors import Problem, ValidationFailed

# OmegaConf's float resolver (omegaconf/_utils.py: get_yaml_loader).
_FLOAT_RE = re.compile(
    r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
MAX_BYTES = 1_000_000
MAX_DEPTH = 64  # LLaMA-Factory's configs nest 2 levels; DeepSpeed's inline mappings 3


class _Loader(yaml.SafeLoader):
    """Safe, OmegaConf-compatible floats, no anchors/aliases (no alias bombs), no duplicate keys, bounded depth."""

    depth = 0


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _ch in list(_Loader.yaml_implicit_resolvers):
    _Loader.yaml_implicit_resolvers[_ch] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers[_ch] if tag != "tag:yaml.org,2002:float"
    ]
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def _compose_node(self: _Loader, parent: Any, index: Any) -> Any:
    if self.check_event(yaml.AliasEvent):
        event = self.peek_event()
        raise yaml.constructor.ConstructorError(
            None, None, "YAML aliases (*name) are not allowed in training configs", event.start_mark
        )
    event = self.peek_event()
    if getattr(event, "anchor", None):
        raise yaml.constructor.ConstructorError(
            None, None, "YAML anchors (&name) are not allowed in training configs", event.start_mark
        )
    if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
        return yaml.SafeLoader.compose_node(self, parent, index)
    if self.depth >= MAX_DEPTH:
        raise yaml.constructor.ConstructorError(
            None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
        )
    self.depth += 1
    try:
        return yaml.SafeLoader.compose_node(self, parent, index)
    finally:
        self.depth -= 1


def _construct_mapping(self: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = self.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(self, node, deep=deep)


_Loader.compose_node = _compose_node  # type: ignore[method-assign]
_Loader.construct_mapping = _construct_mapping  # type: ignore[method-assign]


def load_mapping(data: bytes | str, source: str = "config") -> dict[str, Any]:
    """Parse a YAML document that must be a mapping; any problem is a ValidationFailed naming `source`."""
    size = len(data) if isinstance(data, bytes) else _utf8_size(data)
    if size > MAX_BYTES:
        reason = f"is {size:,} bytes, larger than the {MAX_BYTES:,} bytes a config may have"
        raise ValidationFailed([Problem("file", reason)], source)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationFailed([Problem("file", f"not UTF-8 (byte {exc.start})")], source) from None
    try:
        doc = yaml.load(data, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationFailed([Problem(where, f"invalid YAML: {problem}")], source) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValidationFailed([Problem("file", f"must be a YAML mapping, got {type(doc).__name__}")], source)
    for key in doc:
        if not isinstance(key, str):
            raise ValidationFailed([Problem(repr(key), "keys must be strings")], source)
    return doc


def _utf8_size(text: str) -> int:
    if len(text) > MAX_BYTES:  # each character is at least one byte: no need to encode a huge text
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def key_lines(data: bytes | str) -> dict[str, int]:
    """The 1-based line of each key, nested keys dotted (`lfops.description`); {} when the text does not parse."""
    try:
        root = yaml.compose(data, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError):
        return {}
    lines: dict[str, int] = {}
    pending = [(root, "")]
    while pending:
        node, prefix = pending.pop()
        if not isinstance(node, yaml.MappingNode):
            continue
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                lines.setdefault(prefix + key.value, key.start_mark.line + 1)
                pending.append((value, f"{prefix}{key.value}."))
    return lines


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # libyaml's emitter when present: ~5x faster
    pass


_Dumper.yaml_implicit_resolvers = {k: list(v) for k, v in _Loader.yaml_implicit_resolvers.items()}


def _represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.ScalarNode:
    if math.isnan(value):
        text = ".nan"
    elif math.isinf(value):
        text = ".inf" if value > 0 else "-.inf"
    else:
        text = repr(value).lower()
        if "e" in text:
            mantissa, exp = text.split("e")
            if "." not in mantissa:
                mantissa += ".0"
            sign = "-" if exp.startswith("-") else "+"
            text = f"{mantissa}e{sign}{exp.lstrip('+-').zfill(2)}"
        elif "." not in text:
            text += ".0"
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Quote anything either parser could read as a non-string (PyYAML 1.1 or OmegaConf's rules).
    resolved_11 = yaml.SafeDumper.resolve(dumper, yaml.ScalarNode, value, (True, False))
    resolved_12 = _Dumper.resolve(dumper, yaml.ScalarNode, value, (True, False))
    str_tag = "tag:yaml.org,2002:str"
    style = "'" if resolved_11 != str_tag or resolved_12 != str_tag else None
    if "\n" in value:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(float, _represent_float)
_Dumper.add_representer(str, _represent_str)


def dump(doc: dict[str, Any]) -> str:
    """Block-style YAML in the given key order, with normalised scalars."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
