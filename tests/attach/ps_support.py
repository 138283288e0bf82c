"""Oracles for generated PowerShell, independent of the code under test.

* ``parse`` runs the tree-sitter PowerShell grammar (a separate project's parser) over a script:
  a script with a syntax error, or a hostile value that escaped its string literal, shows up as
  ERROR nodes, extra commands or extra string literals.
* ``decode_single_quoted`` is a model of PowerShell's tokenizer rule for single-quoted strings
  (about_Quoting_Rules; CharTraits.IsSingleQuote lists the five single-quote characters): the
  literal opens with any single-quote character, a pair of single-quote characters inside stands
  for one, and the first lone one closes it. tree-sitter's grammar knows only the ASCII
  apostrophe, so this model is the oracle for the curly variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from helpers import require_module

PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def decode_single_quoted(text: str, start: int = 0) -> tuple[str, int]:
    """(value, index just past the closing quote) of the literal opening at ``text[start]``."""
    if text[start] not in PS_SINGLE_QUOTES:
        raise ValueError(f"no single-quoted literal at {start}")
    out = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c in PS_SINGLE_QUOTES:
            if i + 1 < len(text) and text[i + 1] in PS_SINGLE_QUOTES:
                out.append(c)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ValueError("unterminated literal")


@dataclass
class Parsed:
    has_error: bool
    errors: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # command names, in order
    strings: list[str] = field(default_factory=list)  # string literal tokens, as written
    variables: list[str] = field(default_factory=list)


_PARSER: Any = None


def _parser() -> Any:
    global _PARSER
    if _PARSER is None:
        tree_sitter = require_module("tree_sitter")
        grammar = require_module("tree_sitter_powershell")
        _PARSER = tree_sitter.Parser(tree_sitter.Language(grammar.language()))
    return _PARSER


def parse(script: str) -> Parsed:
    tree = _parser().parse(script.encode("utf-8"))
    parsed = Parsed(has_error=tree.root_node.has_error)
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        text = node.text.decode("utf-8")
        if node.type == "ERROR" or node.is_missing:
            parsed.errors.append(f"{node.start_point}: {text[:60]!r}")
        if node.type == "command_name":
            parsed.commands.append(text)
        elif node.type == "variable":
            parsed.variables.append(text)
        if node.type == "string_literal":
            parsed.strings.append(text)
            continue  # the token is the whole literal
        stack.extend(reversed(node.children))
    return parsed
