"""Just enough of PostgreSQL's lexical rules to read a workload file: where statements
end, and which characters are code rather than text.

Why a lexer and not line-by-line regular expressions: a ``;`` or ``--`` inside a string
literal (``'--'``), a dollar quote (``$$--$$``), a quoted identifier or a comment is text.
Stripping comments first makes ``SELECT '--'; INSERT …`` look like one statement.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Token(NamedTuple):
    kind: str  # space, comment, string, ident, word, semi, other
    text: str


_WORD = re.compile(r"[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*")
_SPACE = re.compile(r"\s+")
_DOLLAR = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$")
_QUOTED = {"'": "quoted string", '"': "quoted identifier"}


class LexError(ValueError):
    """Unterminated quote or comment: the text is not SQL PostgreSQL would read."""


def tokens(sql: str) -> list[Token]:
    """The tokens of ``sql``, in order; joined they give ``sql`` back."""
    out: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if m := _SPACE.match(sql, i):
            out.append(Token("space", m.group()))
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            out.append(Token("comment", sql[i : n if end < 0 else end]))
        elif sql.startswith("/*", i):
            out.append(Token("comment", sql[i : _block_end(sql, i)]))
        elif c in "eE" and sql.startswith("'", i + 1):
            out.append(Token("string", c + _quoted(sql, i + 1, backslash=True)))
        elif c in _QUOTED:
            out.append(Token("string" if c == "'" else "ident", _quoted(sql, i)))
        elif m := _DOLLAR.match(sql, i):
            end = sql.find(m.group(), m.end())
            if end < 0:
                raise LexError(f"unterminated dollar-quoted string {m.group()}")
            out.append(Token("string", sql[i : end + len(m.group())]))
        elif m := _WORD.match(sql, i):
            out.append(Token("word", m.group()))
        else:
            out.append(Token("semi" if c == ";" else "other", c))
        i += len(out[-1].text)
    return out


def _quoted(sql: str, i: int, backslash: bool = False) -> str:
    """The quoted text starting at ``sql[i]`` (a doubled quote is one; ``\\`` escapes in E'')."""
    q, j = sql[i], i + 1
    while j < len(sql):
        if (backslash and sql[j] == "\\") or sql.startswith(q + q, j):  # an escape, or ''
            j += 2
        elif sql[j] == q:
            return sql[i : j + 1]
        else:
            j += 1
    raise LexError(f"unterminated {_QUOTED[q]}")


def _block_end(sql: str, i: int) -> int:
    """The end of the (nested) block comment opening at ``sql[i]``."""
    depth, j = 0, i
    while j < len(sql):
        if sql.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif sql.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    raise LexError("unterminated /* comment")


def statements(toks: list[Token]) -> list[list[Token]]:
    """The statements (tokens between ``;``), leaving out those holding no code."""
    out: list[list[Token]] = [[]]
    for t in toks:
        if t.kind == "semi":
            out.append([])
        else:
            out[-1].append(t)
    return [s for s in out if code(s)]


def code(toks: list[Token]) -> list[Token]:
    """The tokens that are code: no space, no comment."""
    return [t for t in toks if t.kind not in ("space", "comment")]
