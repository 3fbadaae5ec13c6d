"""The settings dialog: fields for the chosen mode only, Test tries the settings as typed,
nothing set is lost on OK."""

from __future__ import annotations

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
