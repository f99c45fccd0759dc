"""The one writer (whole or not at all, with the mode asked for) and the one cache root."""

from __future__ import annotations

import os
import stat

import pytest

from dcrn.models.files import atomic_file, atomic_write, cache_root


def test_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    atomic_write(target, b"first")
    atomic_write(target, "second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]


def test_a_writer_that_fails_leaves_the_previous_file_as_it_was(tmp_path):
    target = tmp_path / "model.pt"
    atomic_write(target, b"good")
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_write_keeps_the_mode_it_is_given(tmp_path):
    target = atomic_write(tmp_path / "secret.pt", b"x", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_atomic_write_gives_a_new_file_the_usual_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = atomic_write(tmp_path / "plain.json", "{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_cache_root_honours_the_argument_then_dcrn_cache_dir_then_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("DCRN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "dcrn"
    monkeypatch.setenv("DCRN_CACHE_DIR", str(tmp_path / "own"))
    assert cache_root() == tmp_path / "own"
    assert cache_root(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("DCRN_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "dcrn"
