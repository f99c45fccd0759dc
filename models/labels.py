"""What a class label may hold: it is printed on terminals, in log lines and in the window, as it is.

A label comes from a checkpoint, a data set file or the user. One with control characters (an escape
sequence, a newline, a carriage return), invisible format characters (right-to-left overrides) or line
separators could rewrite what a terminal or a log shows, so :func:`unsafe_characters` finds them and the
loaders refuse such a label with one line. Pure Python: no torch, no engine.
"""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 128  # characters; a label is a name, not a paragraph
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, format (bidi), surrogates, line/para separators


def unsafe_characters(text: str) -> list[str]:
    """The characters of ``text`` that must never reach a terminal or a log line, in order, once each."""
    return list(dict.fromkeys(c for c in text if unicodedata.category(c) in _UNSAFE_CATEGORIES))


def label_problem(label: object, max_length: int = MAX_LENGTH) -> str | None:
    """Why ``label`` cannot be shown as it is (one phrase, the label quoted safely), or None when it can."""
    if not isinstance(label, str):
        return f"a label must be text, got {type(label).__name__}"
    shown = repr(label[:20]) + ("..." if len(label) > 20 else "")  # repr() escapes what it shows
    if not label.strip():
        return f"label {shown} is empty"
    if len(label) > max_length:
        return f"label {shown} is {len(label)} characters long; at most {max_length}"
    bad = unsafe_characters(label)
    if bad:
        listed = " ".join(ascii(c) for c in bad[:5])
        return f"label {shown} contains control or invisible characters ({listed})"
    return None
