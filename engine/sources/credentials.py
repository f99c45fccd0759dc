"""Credentials of network sources kept out of the command line, in a file only their owner can read.

A password in ``--source rtsp://admin:pw@cam/x`` is visible to every user of the machine (``ps``, shell
history). Instead, name the source without it and keep the password in a credentials file::

    # ~/.config/dcrn/credentials  (chmod 600)  --  one source per line: WHERE USER:PASSWORD
    cam1.local                         admin:s3cret/with#odd@chars
    cam2.local:8554                    viewer:another one
    rtsp://nvr.local/Streaming/101     admin:nvr-password

    dcrn run --source rtsp://cam1.local/stream1 --credentials ~/.config/dcrn/credentials
    DCRN_CREDENTIALS=~/.config/dcrn/credentials dcrn gui

``WHERE`` is a host, a ``host:port``, or a URL prefix. A source URL matches when its host is the same
(and its port, when ``WHERE`` names one; a URL prefix also needs the same scheme, and the URL's path must
start with the prefix's path). The most specific match (the longest ``WHERE``) wins. The password is the
rest of the line after the first ``:``, taken as written (no quoting, spaces kept, trailing white space
dropped). Blank lines and lines starting with ``#`` are ignored.

Only a URL *without* a password gets credentials; a URL that names a user (``rtsp://viewer@cam/x``) gets
the password of a line with that user. User and password are put in percent-encoded, which FFmpeg decodes,
so passwords with ``@ / # : ?`` work. The file must be a regular file that no other user can read or
write (``chmod 600``), else it is refused. Nothing here ever shows a password: errors name the file and
the line number, not the line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from dcrn.models.errors import ConfigError

ENV = "DCRN_CREDENTIALS"  # path of the credentials file used when no --credentials is given
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Credential:
    """One line of a credentials file."""

    where: str  # host, host:port or URL prefix, as written
    user: str
    password: str  # never shown

    def __repr__(self) -> str:
        return f"Credential({self.where!r}, user={self.user!r}, password='***')"

    def matches(self, url: str) -> bool:
        try:
            target = urlsplit(url)
            host, port = (target.hostname or "").lower(), target.port
            want = urlsplit(self.where if "://" in self.where else f"//{self.where}")
            want_host, want_port = (want.hostname or "").lower(), want.port
        except ValueError:  # a malformed URL or port matches nothing
            return False
        scheme = target.scheme.lower()
        if not host or host != want_host:
            return False
        if want.scheme and want.scheme.lower() != scheme:
            return False
        if want_port is not None and want_port != (port or DEFAULT_PORTS.get(scheme)):
            return False
        return target.path.startswith(want.path)


class Credentials:
    """The lines of one credentials file; :meth:`apply` puts the matching user and password into a URL."""

    def __init__(self, entries: list[Credential], source: str = "credentials") -> None:
        self.entries = entries
        self.source = source  # the file, for messages

    @classmethod
    def load(cls, path: str | os.PathLike) -> Credentials:
        """Read ``path``; :class:`ConfigError` (one line, no secret) when it is missing, open to others or malformed."""
        path = Path(path).expanduser()
        try:
            info = path.stat()
        except OSError as exc:
            raise ConfigError(f"credentials file {path}: cannot read it ({exc.strerror or exc})") from None
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"credentials file {path}: not a regular file")
        if os.name == "posix":
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise ConfigError(
                    f"credentials file {path}: other users can read or change it (mode {mode:04o}); "
                    f"make it private with: chmod 600 {path}"
                )
            if info.st_uid != os.geteuid():
                raise ConfigError(f"credentials file {path}: owned by another user (uid {info.st_uid})")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"credentials file {path}: {info.st_size} bytes, more than a credentials file holds")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"credentials file {path}: cannot read it ({reason})") from None
        return cls(parse_credentials(text, str(path)), str(path))

    @classmethod
    def from_env(cls) -> Credentials | None:
        """The file named by ``$DCRN_CREDENTIALS``, or None when it is not set."""
        path = os.environ.get(ENV, "").strip()
        return cls.load(path) if path else None

    def find(self, url: str) -> Credential | None:
        """The most specific line for ``url`` (with the URL's user, when it names one), or None."""
        user = _url_user(url)
        found = [c for c in self.entries if c.matches(url) and (user is None or c.user == user)]
        return max(found, key=lambda c: len(c.where), default=None)

    def apply(self, url: str) -> str:
        """``url`` with user and password from this file when it has no password of its own and a line matches."""
        if "://" not in url or _has_password(url):
            return url
        entry = self.find(url)
        if entry is None:
            return url
        head, rest = url.split("://", 1)
        authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        host = rest[:authority_end].rpartition("@")[2]
        userinfo = f"{quote(entry.user, safe='')}:{quote(entry.password, safe='')}"
        return f"{head}://{userinfo}@{host}{rest[authority_end:]}"

    def __repr__(self) -> str:
        return f"Credentials({self.source!r}, {len(self.entries)} entries)"


def parse_credentials(text: str, source: str = "credentials") -> list[Credential]:
    """The lines of a credentials file; :class:`ConfigError` naming the line number (never its content)."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        user, sep, password = parts[1].partition(":") if len(parts) == 2 else ("", "", "")
        if not sep or not user or not password:
            raise ConfigError(f"credentials file {source}: line {number} is not 'HOST-OR-URL-PREFIX USER:PASSWORD'")
        entries.append(Credential(parts[0], user, password))
    return entries


def apply_credentials(uris: list[str], path: str | os.PathLike | None = None) -> list[str]:
    """``uris`` with credentials from ``path`` (else ``$DCRN_CREDENTIALS``; else as given)."""
    credentials = Credentials.load(path) if path else Credentials.from_env()
    if credentials is None:
        return list(uris)
    return [credentials.apply(uri) if isinstance(uri, str) else uri for uri in uris]


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password in its user info (``scheme://user:password@host``)."""
    return "://" in url and _has_password(url)


def _userinfo(url: str) -> str | None:
    rest = url.split("://", 1)[1]
    if "@" not in rest:
        return None
    return rest.rpartition("@")[0]  # the last "@" decides, as in redact() and FFmpeg


def _has_password(url: str) -> bool:
    userinfo = _userinfo(url)
    return userinfo is not None and ":" in userinfo


def _url_user(url: str) -> str | None:
    userinfo = _userinfo(url) if "://" in url else None
    return userinfo.partition(":")[0] if userinfo else None
