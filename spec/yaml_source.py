"""Read spec YAML keeping the line of every value, so errors can point at the line to fix.

PyYAML's plain loaders forget where values came from and silently keep the last of two
duplicate keys; both are wrong for a hand-edited spec, so documents are composed to nodes
and built here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from kvm_fwspec.spec.errors import SpecError, SpecProblem

JsonPath = tuple[str | int, ...]
SPDX_PREFIX = "# SPDX-License-Identifier: "


def format_json_path(path: JsonPath) -> str:
    """Render a document path the way a reader finds it: `registers[2].values[0].name`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@dataclass(frozen=True)
class SourceDocument:
    """A parsed spec file with the 1-based line on which each value starts."""

    path: Path
    text: str
    data: Any
    lines: Mapping[JsonPath, int]

    def line_of(self, path: JsonPath) -> int:
        """The line of `path`, or of its nearest located ancestor."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1

    def problem(self, path: JsonPath, message: str) -> SpecProblem:
        return SpecProblem(self.path, self.line_of(path), format_json_path(path), message)


class _SpecLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML without dates: the spec writes releases, never timestamps, and an unquoted
    2020-02-30 should fail the schema as a string, not crash as an impossible date. Parsed by
    libyaml where PyYAML has it: ten times faster, and every process that loads the spec
    (each agent, each certify) pays for it."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


class _Builder:
    """Turns a composed node tree into plain data, recording lines and refusing duplicate keys."""

    def __init__(self, path: Path, loader: yaml.SafeLoader) -> None:
        self.file = path
        self.loader = loader
        self.lines: dict[JsonPath, int] = {}
        self.problems: list[SpecProblem] = []

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node)
                if not isinstance(key, str):
                    self._problem(key_node, path, f"key {key!r} is not a string")
                    continue
                if key in result:
                    self._problem(key_node, path, f"duplicate key '{key}'")
                    continue
                result[key] = self.build(value_node, (*path, key))
                self.lines[(*path, key)] = key_node.start_mark.line + 1
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return self.loader.construct_object(node)
        except ValueError as exc:  # a scalar YAML recognises but cannot build, such as 0o9
            self._problem(node, path, f"cannot read value {node.value!r}: {exc}")
            return None

    def _problem(self, node: yaml.Node, path: JsonPath, message: str) -> None:
        line = node.start_mark.line + 1
        self.problems.append(SpecProblem(self.file, line, format_json_path(path), message))


def load_document(path: Path) -> SourceDocument:
    """Parse one spec file; raise SpecError naming the line of a syntax error or duplicate key."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError([SpecProblem(path, 1, "", f"cannot read: {exc.strerror}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        byte = raw[exc.start]
        raise SpecError(
            [SpecProblem(path, line, "", f"not UTF-8: byte {byte:#04x} cannot be decoded")]
        ) from exc
    # A file with nothing in it (not even its licence line) is said to be empty, by the
    # parser below, rather than to lack its licence line.
    if text.strip() and not text.startswith(SPDX_PREFIX):
        raise SpecError([SpecProblem(path, 1, "", f"first line must be '{SPDX_PREFIX}...'")])
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError([SpecProblem(path, 1, "", "document is empty")])
        builder = _Builder(path, loader)
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        reason = "; ".join(filter(None, (exc.context, exc.problem))) or "invalid YAML"
        raise SpecError([SpecProblem(path, line, "", f"YAML syntax: {reason}")]) from exc
    finally:
        loader.dispose()
    if builder.problems:
        raise SpecError(builder.problems)
    return SourceDocument(path, text, data, builder.lines)
