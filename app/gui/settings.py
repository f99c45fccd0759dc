"""What the window remembers between launches, kept in QSettings.

The default location is the platform's per-user settings (``~/.config/DCRN Live/dcrn-gui.ini`` on
Linux). ``DCRN_GUI_SETTINGS`` or an explicit path selects an INI file instead; tests always pass one so
that they never touch the user's settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PyQt6.QtCore import QByteArray, QSettings, QStandardPaths

from dcrn.app.gui.worker import (
    without_secrets,
)  # the engine's, through the bridge; passwords come from $DCRN_CREDENTIALS (docs/SECURITY.md)

ORGANIZATION = "DCRN Live"
APPLICATION = "dcrn-gui"
ENV_PATH = "DCRN_GUI_SETTINGS"
MAX_RECENT = 8  # entries kept in each recent list


def default_teach_dataset() -> str:
    return str(Path.home() / "dcrn-teach" / "my-actions")


def default_snapshot_dir() -> str:
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    return str(Path(pictures or Path.home()) / "dcrn-snapshots")


@dataclass
class GuiSettings:
    """The remembered state: plain values, loaded and saved in one place."""

    source: str = "synthetic:"  # the last source started (raw URI; shown only redacted)
    model: str = "default"  # a shipped model name or a checkpoint path
    recent_sources: list[str] = field(default_factory=list)  # URLs and files started, newest first (raw)
    recent_models: list[str] = field(default_factory=list)  # checkpoint files chosen, newest first
    snapshot_dir: str = field(default_factory=default_snapshot_dir)
    geometry: bytes = b""  # QMainWindow.saveGeometry()
    teach_dataset: str = field(default_factory=default_teach_dataset)  # the Teach panel's data set folder
    evidence_dir: str = ""  # clips and snapshots of actions go here ("" -> none); `dcrn gui --evidence DIR`

    def remember_source(self, url: str) -> None:
        self.recent_sources = _push(self.recent_sources, url)

    def remember_model(self, path: str) -> None:
        self.recent_models = _push(self.recent_models, path)


class SettingsStore:
    """Reads and writes :class:`GuiSettings` through QSettings."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        path = path or os.environ.get(ENV_PATH)
        if path:
            self.qsettings = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self.qsettings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)

    @property
    def location(self) -> str:
        return self.qsettings.fileName()

    def load(self) -> GuiSettings:
        s = self.qsettings
        defaults = GuiSettings()
        geometry = s.value("window/geometry", QByteArray())
        return GuiSettings(
            source=str(s.value("session/source", defaults.source)),
            model=str(s.value("session/model", defaults.model)),
            recent_sources=_string_list(s.value("recent/sources", [])),
            recent_models=_string_list(s.value("recent/models", [])),
            snapshot_dir=str(s.value("snapshots/dir", defaults.snapshot_dir)),
            geometry=bytes(geometry) if isinstance(geometry, QByteArray) else b"",
            teach_dataset=str(s.value("teach/dataset", defaults.teach_dataset)),
            evidence_dir=str(s.value("evidence/dir", defaults.evidence_dir) or ""),
        )

    def save(self, settings: GuiSettings) -> None:
        s = self.qsettings
        s.setValue("session/source", without_secrets(settings.source))  # the password stays out of the file
        s.setValue("session/model", settings.model)
        s.setValue("recent/sources", list(dict.fromkeys(without_secrets(u) for u in settings.recent_sources)))
        s.setValue("recent/models", list(settings.recent_models))
        s.setValue("snapshots/dir", settings.snapshot_dir)
        s.setValue("window/geometry", QByteArray(settings.geometry))
        s.setValue("teach/dataset", settings.teach_dataset)
        s.setValue("evidence/dir", settings.evidence_dir)
        s.sync()
        _owner_only(Path(s.fileName()))  # recent URLs may hold passwords


def _owner_only(path: Path) -> None:
    if os.name == "posix" and path.is_file():
        path.chmod(0o600)


def _push(items: list[str], item: str) -> list[str]:
    return [item, *[x for x in items if x != item]][:MAX_RECENT]


def _string_list(value: object) -> list[str]:
    # QSettings' INI format returns a single-item list as a plain string and an empty one as None.
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(x) for x in value]  # type: ignore[union-attr]
