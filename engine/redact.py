"""Hide credentials in source URIs (and in any text that contains one) before they are shown or logged.

    >>> redact("rtsp://admin:s3cret@10.0.0.5:554/stream1")
    'rtsp://***@10.0.0.5:554/stream1'
    >>> redact("https://cam.example/live.m3u8?token=abc&quality=hd")
    'https://cam.example/live.m3u8?token=***&quality=hd'

Every URI the engine shows (records, log lines, error messages, window titles) passes through
:func:`redact`. It works on free text too, so an error message from FFmpeg that quotes the URL is safe
to show once redacted. It never raises: a malformed URI is redacted as far as it can be read.
"""

from __future__ import annotations

import re

MASK = "***"

# The user-info part of an authority: "scheme://" then anything up to the last "@" before the path.
# A password may itself contain "@" or ":" (unencoded, as users type them), so the match runs to the
# last "@" that comes before the first "/", "?", "#" or whitespace after the "//".
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")

# Query or fragment parameters whose values are secrets. Matched case-insensitively as whole names,
# also with prefixes and suffixes such as "access_token", "api_key", "X-Amz-Signature".
_SECRET_NAMES = r"[\w.\-]*(?:pass(?:word|wd)?|pwd|token|secret|key|auth\w*|signature|sig|credential\w*|session\w*)"
_SECRET_PARAM = re.compile(rf"(?P<sep>[?&;#])(?P<name>{_SECRET_NAMES})=(?P<value>[^&;#\s'\"]*)", re.IGNORECASE)


def redact(uri: str) -> str:
    """``uri`` (or any text) with user names, passwords and secret query values replaced by ``***``."""
    if not isinstance(uri, str):
        uri = str(uri)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", uri)
    return _SECRET_PARAM.sub(lambda m: f"{m['sep']}{m['name']}={MASK}" if m["value"] else m[0], text)
