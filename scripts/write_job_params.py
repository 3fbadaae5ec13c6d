"""Write gfm_plugin/processing/job_params.json: the job types' params as the backend declares
them, for the plugin's Processing algorithms (the plugin never imports the backend)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gfm_backend.service.jobs import plugin_declarations

TARGET = Path(__file__).resolve().parents[1] / "gfm_plugin" / "processing" / "job_params.json"


def render() -> str:
    return json.dumps(plugin_declarations(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET
    target.write_text(render(), encoding="utf-8")
    print(target)
