"""YAML for input the project does not control: PyYAML's safe loader with its size amplifiers bounded.

A safe load runs no code, but it still lets a 1 KB document of nested aliases stand for
gigabytes (every consumer that walks or serialises the tree expands it), lets 20,000 nested
brackets exhaust the stack, and lets an over-long integer or an impossible date escape as a
bare ValueError. Here an alias may stand only for a single value, and repeat at most
MAX_ALIAS_CHARS characters in all; nesting stops at MAX_DEPTH; every failure is a
`yaml.YAMLError` that says where.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

__all__ = ["MAX_ALIAS_CHARS", "MAX_DEPTH", "parse_yaml"]

MAX_DEPTH = 32  # the config schema is five levels deep
MAX_ALIAS_CHARS = 64 * 1024


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases to collections, bounds aliased text and nesting depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliased = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        mark: Any = event.start_mark  # the stubs type it as a union with the C loader's Mark
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if not isinstance(node, yaml.ScalarNode):
                kind = "mapping" if isinstance(node, yaml.MappingNode) else "list"
                raise ComposerError(
                    None,
                    None,
                    f"alias *{event.anchor} stands for a {kind}; an alias may stand only for a single value "
                    "(aliases of collections can expand without bound), so write the values out",
                    mark,
                )
            self._aliased += len(node.value)
            if self._aliased > MAX_ALIAS_CHARS:
                raise ComposerError(
                    None,
                    None,
                    f"aliases repeat more than {MAX_ALIAS_CHARS:,} characters in all; write the values out",
                    mark,
                )
            return node
        nested = isinstance(event, yaml.CollectionStartEvent)
        if nested:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:  # int() over 4,300 digits, a timestamp like 2001-13-40
            raise ConstructorError(None, None, f"cannot read value: {exc}", node.start_mark) from None


def parse_yaml(text: str) -> Any:
    """The single YAML document in `text` (None when empty); any problem is a `yaml.YAMLError` with its place."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
