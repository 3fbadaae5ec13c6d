"""Set up the GFM backend in a virtual environment of its own, never in QGIS's Python.

Standard library only, so the same code runs inside QGIS (in a `QgsTask`) and from a
terminal: `python3 -m gfm_plugin.installer --venv DIR [--python PY]`. It finds a Python
>= 3.10, creates the venv, installs torch built for the machine and then the backend
that travels in the plugin zip with its pinned dependencies, and checks the result.
Each step first looks whether it is already done, so running it again repairs what an
interrupted run left and upgrades the backend after a plugin upgrade.
"""

from .steps import Installer, InstallError, bundled_backend, default_venv_dir, venv_python

__all__ = ["InstallError", "Installer", "bundled_backend", "default_venv_dir", "venv_python"]
