"""The remote backend's token in QGIS's authentication manager (encrypted with the
master password), never in plain text in QGIS3.ini: the settings keep only the id of
the authentication configuration."""

from __future__ import annotations

from qgis.core import QgsApplication, QgsAuthMethodConfig

CONFIG_NAME = "GFM backend token"
METHOD = "Basic"  # user name "gfm", the token as the password: every QGIS build has it
_known: dict[str, str] = {}  # read once on the GUI thread, then used by task threads


def _unpack(result) -> bool:
    """PyQGIS returns (ok, config) for some calls and ok alone for others."""
    return bool(result[0] if isinstance(result, tuple) else result)


def _manager_ready():
    manager = QgsApplication.authManager()
    if manager is None or manager.isDisabled():
        return None
    if not manager.masterPasswordIsSet() and not manager.setMasterPassword(True):
        return None  # the user declined to enter (or create) the master password
    return manager


def store(token: str, authcfg: str = "") -> str | None:
    """Save `token` (into the existing configuration `authcfg` if there is one); the id,
    or None when the authentication manager cannot be used (disabled, no master password)."""
    manager = _manager_ready()
    if manager is None:
        return None
    config = QgsAuthMethodConfig(METHOD)
    config.setName(CONFIG_NAME)
    config.setConfig("username", "gfm")
    config.setConfig("password", token)
    if authcfg and authcfg in manager.configIds():
        config.setId(authcfg)
        ok = _unpack(manager.updateAuthenticationConfig(config))
    else:
        ok = _unpack(manager.storeAuthenticationConfig(config))
    if not ok or not config.id():
        return None
    _known[config.id()] = token
    return config.id()


def load(authcfg: str) -> str:
    """The token of configuration `authcfg` ("" when it is gone or cannot be decrypted)."""
    if not authcfg:
        return ""
    if authcfg in _known:
        return _known[authcfg]
    manager = _manager_ready()
    if manager is None or authcfg not in manager.configIds():
        return ""
    config = QgsAuthMethodConfig()
    if not _unpack(manager.loadAuthenticationConfig(authcfg, config, True)):
        return ""
    _known[authcfg] = config.config("password", "")
    return _known[authcfg]


def remove(authcfg: str) -> None:
    manager = QgsApplication.authManager()
    _known.pop(authcfg, None)
    if authcfg and manager is not None and authcfg in manager.configIds():
        manager.removeAuthenticationConfig(authcfg)
