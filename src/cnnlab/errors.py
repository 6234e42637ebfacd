"""The one exception type users see, and the helper that suggests close names.

Every error a user can cause (a bad argument, a missing file, an unknown name) is raised as
`CnnlabError` with a message that says what was received, what was expected and how to fix it.
The CLI prints that message as one line and exits non-zero; Python callers can catch it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["CnnlabError", "did_you_mean", "first_line"]


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
    has none: third-party errors quoted inside a one-line CnnlabError.

    >>> first_line(RuntimeError("size mismatch\\n  long details")), first_line(KeyError())
    ('size mismatch', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
