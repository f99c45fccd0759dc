"""Hide credentials in URLs (and in any text that contains one) before they are shown or logged.

    >>> redact("rtsp://admin:s3cret@10.0.0.5:554/stream1")
    'rtsp://***@10.0.0.5:554/stream1'
    >>> redact("rtsp://admin:se/cret#1@cam/x")
    'rtsp://***@cam/x'
    >>> redact("https://cam.example/live.m3u8?token=abc&quality=hd")
    'https://cam.example/live.m3u8?token=***&quality=hd'

Every URL the project shows (records, log lines, error messages, window titles, stored settings) passes
through :func:`redact`. It works on free text too, so an error message from FFmpeg that quotes the URL is
safe to show once redacted. It never raises: a malformed URL is redacted as far as it can be read.

**User info.** Everything between ``://`` and the *last* ``@`` that follows it on the same line (before
any further ``scheme://``) is replaced by ``***``. Users type passwords unencoded, and a password may
hold any of ``@ : / ? # '`` or even a space, so no parser can tell where such a password ends and the
host begins: in ``rtsp://admin:se/cret@host/x`` the ``/`` is part of the password, while a strict
RFC 3986 reading would take ``admin:se`` as the authority and ``/cret@host/x`` as the path. Masking up to
the last ``@`` is the only rule that never shows part of a password. Its cost is cosmetic: a URL whose
path or query holds an ``@`` (``rtsp://host/path@x``) is shown as ``rtsp://***@x``, with less detail but
nothing secret.

**Query and fragment parameters** whose name contains a secret-looking word (:data:`SECRET_WORDS`,
case-insensitive: ``password``, ``pw``, ``passphrase``, ``jwt``, ``access_token``, ``api_key``,
``X-Amz-Signature``, ``sessionid``, ...) have their value replaced by ``***`` up to the next ``&`` or
white space (a ``#`` or ``;`` inside a secret value is masked with it). A name such as ``keyframe`` is
masked too: showing too little is harmless, showing a secret is not.
"""

from __future__ import annotations

import re

MASK = "***"

# Words that make a parameter name secret wherever they appear in it ("pw" covers pwd and passwd, "pass"
# password and passphrase, "key" apikey and api_key, "sig" signature, "auth" authorization and oauth).
SECRET_WORDS = (
    "pass",
    "pw",
    "secret",
    "token",
    "key",
    "auth",
    "sig",
    "credential",
    "session",
    "sid",
    "jwt",
    "cookie",
    "bearer",
    "private",
)

_SCHEME = r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://"
# "scheme://", then (greedily, so up to the LAST "@") any characters other than a line break that do not
# start another "scheme://", then "@".
_USERINFO = re.compile(rf"(?P<scheme>{_SCHEME})(?:(?!{_SCHEME})[^\r\n])*@")
_SECRET_NAME = r"[\w.\-]*(?:" + "|".join(SECRET_WORDS) + r")[\w.\-]*"
# The value runs to the next "&" or white space. A quote ends it only where it closes a quoted URL
# (followed by white space, punctuation or the end), so a quote inside a password is masked too.
_SECRET_PARAM = re.compile(
    rf"(?P<sep>[?&;#])(?P<name>{_SECRET_NAME})=(?P<value>(?:[^&\s'\"]|['\"](?![\s,;:.)\]}}]|$))*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` (a URL or any text) with user names, passwords and secret parameter values as ``***``."""
    if not isinstance(text, str):
        text = str(text)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['sep']}{m['name']}={MASK}" if m["value"] else m[0], text)


def without_secrets(url: str) -> str:
    """``url`` as it may be stored (settings, data set files): the password left out of the user info (the
    user kept, ``rtsp://admin@cam/x``, so a credentials file can supply it) and secret parameter values
    masked. Unlike :func:`redact`, the result still names the same stream."""
    if not isinstance(url, str):
        url = str(url)
    match = _USERINFO.search(url)
    if match:
        userinfo = url[match.end("scheme") : match.end() - 1]
        user = userinfo.partition(":")[0]
        url = f"{url[: match.end('scheme')]}{user}{'@' if user else ''}{url[match.end() :]}"
    return _SECRET_PARAM.sub(lambda m: f"{m['sep']}{m['name']}={MASK}" if m["value"] else m[0], url)
