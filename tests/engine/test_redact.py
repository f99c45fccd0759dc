"""Credentials in source URIs never reach a message, a record or a log line."""

from __future__ import annotations

import pytest

from dcrn.engine.redact import redact


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("rtsp://user:pass@host/x", "rtsp://***@host/x"),
        ("rtsp://admin:s3cret@10.0.0.5:554/Streaming/Channels/101", "rtsp://***@10.0.0.5:554/Streaming/Channels/101"),
        ("rtsps://onlyuser@cam.local/live", "rtsps://***@cam.local/live"),
        ("rtsp://admin:p@ss:w@rd@cam/x", "rtsp://***@cam/x"),  # unencoded '@' and ':' in the password
        ("http://u:p@cam/snap?x=1", "http://***@cam/snap?x=1"),
        ("https://cam.example/live.m3u8?token=abc123&quality=hd", "https://cam.example/live.m3u8?token=***&quality=hd"),
        ("rtsp://cam/x?user=admin&password=hunter2", "rtsp://cam/x?user=admin&password=***"),
        (
            "https://h/x?access_token=a&api_key=b&X-Amz-Signature=c&pwd=d",
            "https://h/x?access_token=***&api_key=***&X-Amz-Signature=***&pwd=***",
        ),
        ("rtsp://cam.local:554/stream1", "rtsp://cam.local:554/stream1"),
        ("/videos/a@b.mp4", "/videos/a@b.mp4"),
        ("synthetic:?seed=3&fps=30", "synthetic:?seed=3&fps=30"),
        ("0", "0"),
        ("", ""),
    ],
)
def test_redact_hides_user_info_and_secret_parameters(uri, expected):
    assert redact(uri) == expected


def test_redact_works_inside_free_text():
    text = "cannot open rtsp://admin:hunter2@127.0.0.1:554/x: [Errno 111] 'rtsp://admin:hunter2@127.0.0.1:554/x'"
    shown = redact(text)
    assert "hunter2" not in shown and "admin" not in shown
    assert shown.count("rtsp://***@127.0.0.1:554/x") == 2


def test_redact_never_raises_on_odd_input():
    for odd in ("rtsp://", "rtsp://@", "://x@y", "rtsp://[::1", "a" * 10_000, "rtsp://u:p@"):
        assert isinstance(redact(odd), str)
    assert redact(7) == "7"
