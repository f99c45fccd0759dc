"""Passwords never reach a message, a stream name or a stored setting, and can stay off the command line."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from dcrn.engine.redact import redact, without_secrets
from dcrn.engine.sources.credentials import Credentials, apply_credentials, parse_credentials
from dcrn.engine.sources.stream import default_stream_name
from dcrn.models.errors import ConfigError

SECRET = "se/cr#t@x:y?z"  # every character a URL parser could mistake for the end of a password


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:se/cret@host/x", "rtsp://***@host/x"),  # a '/' in the password
        ("rtsp://admin:se#cret@host/x", "rtsp://***@host/x"),  # a '#'
        ("rtsp://admin:se?cret@host/x", "rtsp://***@host/x"),  # a '?'
        (f"rtsp://admin:{SECRET}@10.0.0.5:554/a", "rtsp://***@10.0.0.5:554/a"),
        ("rtsp://admin:my pass@host/x", "rtsp://***@host/x"),  # even a space
        ("rtsp://host/path@x", "rtsp://***@x"),  # the price: an '@' in a path hides the host
        ("rtsp://cam/x?pw=hunter2", "rtsp://cam/x?pw=***"),
        ("rtsp://cam/x?passphrase=hunter2&q=1", "rtsp://cam/x?passphrase=***&q=1"),
        ("https://cam/x?jwt=eyJ.hunter2.sig", "https://cam/x?jwt=***"),
        ("https://cam/x?apikey=hunter2", "https://cam/x?apikey=***"),
        ("https://cam/x?sessionid=hunter2", "https://cam/x?sessionid=***"),
        ("https://cam/x?auth=hunter2", "https://cam/x?auth=***"),
        ("https://cam/x?X-Amz-Credential=hunter2", "https://cam/x?X-Amz-Credential=***"),
        ("rtsp://cam/x?pw=hunter#2&q=1", "rtsp://cam/x?pw=***&q=1"),  # a '#' inside the value
        ("https://cam/x#access_token=hunter2", "https://cam/x#access_token=***"),
    ],
)
def test_redaction_leaves_no_part_of_a_password(url, expected):
    assert redact(url) == expected


def test_redaction_in_free_text_masks_every_url_and_keeps_the_rest():
    text = "open 'rtsp://a:se/cret@h1/x' failed; then rtsp://b:p#w@h2/y?token=t0k said 401"
    shown = redact(text)
    assert shown == "open 'rtsp://***@h1/x' failed; then rtsp://***@h2/y?token=*** said 401"


def test_a_stream_name_never_holds_part_of_a_password():
    assert default_stream_name("rtsp://admin:12/secret@cam/live") == "cam-live"


@pytest.mark.parametrize("url", ["rtsp://admin:se/cret@127.0.0.1:1/x", f"rtsp://admin:{SECRET}@127.0.0.1:1/x"])
def test_dcrn_run_with_an_unencoded_password_says_so_without_showing_it(url, cli):
    result = cli("run", "--source", url, "--timeout", "2", "--max-frames", "1")
    result.refused("run", "rtsp://***@127.0.0.1:1/x")
    assert "cret" not in result.err and "admin" not in result.err and "se/" not in result.err


def test_dcrn_run_never_shows_a_secret_query_parameter(cli):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    result = cli("run", "--source", f"rtsp://127.0.0.1:{port}/x?passphrase=hunter2&jwt=hunter3", "--timeout", "2")
    result.refused("run")
    assert "hunter" not in result.err


def test_a_sink_spec_is_redacted_in_its_errors(cli):
    result = cli("run", "--source", "synthetic:", "--sink", "stdout?token=hunter2", "--max-frames", "1")
    result.refused("run", "unknown options")
    assert "hunter2" not in result.err


def test_a_stored_url_keeps_the_user_and_leaves_the_password_out():
    assert without_secrets(f"rtsp://admin:{SECRET}@cam:554/x") == "rtsp://admin@cam:554/x"
    assert without_secrets("rtsp://:pw@cam/x") == "rtsp://cam/x"
    assert without_secrets("https://cam/x?token=abc&q=1") == "https://cam/x?token=***&q=1"
    assert without_secrets("rtsp://cam/x") == "rtsp://cam/x"


def test_the_window_settings_file_never_holds_a_password(tmp_path):
    pytest.importorskip("PyQt6.QtCore")
    from dcrn.app.gui.settings import GuiSettings, SettingsStore

    store = SettingsStore(tmp_path / "settings.ini")
    settings = GuiSettings(source=f"rtsp://admin:{SECRET}@cam/x")
    settings.remember_source(f"rtsp://admin:{SECRET}@cam/x")
    settings.remember_source("https://cam/live?token=hunter2")
    store.save(settings)
    text = (tmp_path / "settings.ini").read_text()
    assert "cr#t" not in text and "se/cr" not in text and "hunter2" not in text
    loaded = SettingsStore(tmp_path / "settings.ini").load()
    assert loaded.source == "rtsp://admin@cam/x"


# -- the credentials file ------------------------------------------------------------------------------


def credentials_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "credentials"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_go_to_the_matching_host_percent_encoded(tmp_path):
    path = credentials_file(tmp_path, f"# cameras\ncam1.local admin:{SECRET}\ncam2.local:8554 viewer:two words\n")
    credentials = Credentials.load(path)
    assert credentials.apply("rtsp://cam1.local/stream") == "rtsp://admin:se%2Fcr%23t%40x%3Ay%3Fz@cam1.local/stream"
    assert credentials.apply("rtsp://cam2.local:8554/s") == "rtsp://viewer:two%20words@cam2.local:8554/s"
    assert credentials.apply("rtsp://cam2.local/s") == "rtsp://cam2.local/s"  # another port: no match
    assert credentials.apply("rtsp://cam1.local.evil.example/s") == "rtsp://cam1.local.evil.example/s"
    assert credentials.apply("rtsp://other:pw@cam1.local/s") == "rtsp://other:pw@cam1.local/s"  # its own password
    assert credentials.apply("synthetic:") == "synthetic:"
    assert "se/cr" not in repr(credentials) + repr(credentials.entries)


def test_a_url_prefix_line_is_more_specific_than_a_host_line(tmp_path):
    path = credentials_file(tmp_path, "nvr.local admin:host-wide\nrtsp://nvr.local/ch2 admin:channel-two\n")
    credentials = Credentials.load(path)
    assert credentials.apply("rtsp://nvr.local/ch2/main") == "rtsp://admin:channel-two@nvr.local/ch2/main"
    assert credentials.apply("rtsp://nvr.local/ch1") == "rtsp://admin:host-wide@nvr.local/ch1"
    assert credentials.apply("http://nvr.local/ch2") == "http://admin:host-wide@nvr.local/ch2"  # other scheme


def test_a_url_naming_a_user_takes_that_users_password(tmp_path):
    path = credentials_file(tmp_path, "cam admin:a-pw\ncam viewer:v-pw\n")
    assert Credentials.load(path).apply("rtsp://viewer@cam/x") == "rtsp://viewer:v-pw@cam/x"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_credentials_file_others_can_read_is_refused_in_one_line(tmp_path, cli, mode):
    path = credentials_file(tmp_path, f"127.0.0.1 admin:{SECRET}\n", mode)
    result = cli("run", "--source", "rtsp://127.0.0.1:1/x", "--credentials", str(path))
    result.refused("run", "chmod 600")
    assert "cr#t" not in result.err


def test_a_malformed_line_is_named_by_number_never_shown(tmp_path, cli):
    path = credentials_file(tmp_path, "cam admin:ok\ncam hunter2-without-a-colon\n")
    result = cli("run", "--source", "rtsp://cam/x", "--credentials", str(path))
    result.refused("run", "line 2")
    assert "hunter2" not in result.err


def test_the_environment_names_the_default_credentials_file(tmp_path, monkeypatch):
    path = credentials_file(tmp_path, "cam admin:pw\n")
    monkeypatch.setenv("DCRN_CREDENTIALS", str(path))
    assert apply_credentials(["rtsp://cam/x", "0", "synthetic:"]) == ["rtsp://admin:pw@cam/x", "0", "synthetic:"]
    monkeypatch.delenv("DCRN_CREDENTIALS")
    assert apply_credentials(["rtsp://cam/x"]) == ["rtsp://cam/x"]


def test_parse_credentials_refuses_a_line_without_user_or_password():
    for text in ("cam :pw", "cam admin:", "cam"):
        with pytest.raises(ConfigError, match="line 1"):
            parse_credentials(text)


@pytest.mark.rtsp
@pytest.mark.slow
def test_dcrn_run_reads_a_protected_camera_with_the_password_from_a_file(tmp_path, dcrn_process):
    """A real RTSP server with Basic authentication: the password (with '/', '#', '@', ':' and '?') is on no
    command line; FFmpeg gets it percent-encoded and decodes it."""
    from tests.fixtures.rtsp import RtspServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    path = credentials_file(tmp_path, f"127.0.0.1 admin:{SECRET}\n")
    out = tmp_path / "out.jsonl"
    with RtspServer(user="admin", password=SECRET) as server:
        bare = f"rtsp://127.0.0.1:{server.port}{server.path}"
        result = dcrn_process("run", "--source", bare, "--credentials", str(path), "--max-frames", "5",
                              "--timeout", "10", "--sink", f"jsonl:{out}", timeout=120)  # fmt: skip
        refused = dcrn_process("run", "--source", bare, "--timeout", "10", timeout=120)
    assert result.code == 0, result.err
    assert out.read_text().count('"prediction"') >= 5
    assert refused.code == 2  # without the file the camera says no
    for text in (result.out, result.err, out.read_text(), refused.err):
        assert "cr#t" not in text and "se/cr" not in text
