"""The settings dialog: fields for the chosen mode only, Test tries the settings as typed,
nothing set is lost on OK."""

from __future__ import annotations

from pathlib import Path

from gfm_plugin.settings import BackendSettings
from gfm_plugin.settings_dialog import SettingsDialog


def test_fields_follow_the_mode_and_every_setting_survives(qgis_app) -> None:
    settings = BackendSettings(mode="local", python="/venv/bin/python", state_dir="/state",
                               url="http://gpu:8765", token="t", models_dir="/models",
                               results_dir="/results")
    dialog = SettingsDialog(settings)
    assert dialog.python.isEnabled() and not dialog.url.isEnabled() and not dialog.token.isEnabled()
    dialog.remote.setChecked(True)
    assert dialog.url.isEnabled() and not dialog.python.isEnabled()
    assert dialog.result_settings() == BackendSettings(
        mode="remote", python="/venv/bin/python", state_dir="/state", url="http://gpu:8765",
        token="t", models_dir="/models", results_dir="/results")


def test_test_says_what_it_found(qgis_app, use_backend) -> None:
    dialog = SettingsDialog(use_backend)
    dialog.test()
    assert dialog.test_result.text().startswith("connected: backend")
    dialog.remote.setChecked(True)
    dialog.url.setText("http://127.0.0.1:9")
    dialog.test()
    assert "not reachable" in dialog.test_result.text()


def test_the_token_lives_in_the_authentication_manager_not_in_the_ini(qgis_app):
    from qgis.core import QgsApplication, QgsSettings

    manager = QgsApplication.authManager()
    assert manager.masterPasswordIsSet() or manager.setMasterPassword("test-master", True)
    before = BackendSettings.load()
    try:
        settings = BackendSettings(mode="remote", url="http://gpu-box:8765", token="s3cret-token")
        assert settings.save() and settings.authcfg in manager.configIds()
        QgsSettings().sync()
        ini = Path(QgsSettings().fileName()).read_text(errors="replace")
        assert "s3cret-token" not in ini and "http://gpu-box:8765" in ini
        assert BackendSettings.load().token == "s3cret-token"
        # a token an older version wrote in plain text is moved into the manager
        QgsSettings().setValue("gfm/token", "old-plain-token")
        assert BackendSettings.load().token == "old-plain-token"
        assert QgsSettings().value("gfm/token", "") == ""
        settings = BackendSettings.load()
        settings.token = ""  # cleared: its configuration goes too
        authcfg = settings.authcfg
        settings.save()
        assert authcfg not in manager.configIds() and BackendSettings.load().token == ""
    finally:
        before.save()
