"""Write gfm_plugin/processing/job_params.json: the job types' params as the backend declares
them, for the plugin's Processing algorithms (the plugin never imports the backend)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gfm_backend.service.jobs import plugin_declarations

TARGET = Path(__file__).resolve().parents[1] / "gfm_plugin" / "processing" / "job_params.json"


def render() -> str:
    return json.dumps(plugin_declarations(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", nargs="?", type=Path, default=TARGET,
                        help="where to write it (default: the plugin's job_params.json)")
    target = parser.parse_args().target
    target.write_text(render(), encoding="utf-8")
    print(target)
