"""The one exception type users see, the helper that suggests close names, and the quoting of others' errors.

Every error a user can cause (a bad argument, a missing file, an unknown name) is raised as
`CnnlabError` with a message that says what was received, what was expected and how to fix it.
The CLI prints that message as one line and exits non-zero; Python callers can catch it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["CnnlabError", "did_you_mean", "first_line", "one_line"]


class CnnlabError(Exception):
    """A user-facing error: its message is the whole story (no traceback needed).

    >>> str(CnnlabError("unknown model 'x'"))
    "unknown model 'x'"
    """


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean ...?' for names close to `name`, or '' when none is close.

    >>> did_you_mean("mnsit", ["mnist", "cifar10"])
    " Did you mean 'mnist'?"
    """
    options = list(choices)
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.6)
    if not close:
        lowered = {o.lower().replace("_", "-"): o for o in options}
        key = name.lower().replace("_", "-")
        close = [lowered[key]] if key in lowered else []
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type name when it
    has none: third-party errors quoted inside a one-line CnnlabError. A line ending in ':' only
    introduces the next, so the two go together (torch's "Error(s) in loading state_dict for X:" heading).

    >>> first_line(RuntimeError("size mismatch\\n  long details")), first_line(KeyError())
    ('size mismatch', 'KeyError')
    >>> first_line(RuntimeError("Error(s) in loading state_dict for Net:\\n\\tMissing key(s): 'w'.\\n\\tmore"))
    "Error(s) in loading state_dict for Net: Missing key(s): 'w'."
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text, rest = lines[0], lines[1:]
    while text.endswith(":") and rest:
        text, rest = f"{text} {rest[0]}", rest[1:]
    return text[:limit]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's whole message on one line (whitespace runs become one space, at most `limit`
    characters), or its type name when it has none.

    >>> one_line(OSError("bad header\\n  at byte 12")), one_line(ValueError(""))
    ('bad header at byte 12', 'ValueError')
    """
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
