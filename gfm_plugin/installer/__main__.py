"""`python3 -m gfm_plugin.installer --venv DIR [--python PY]`: the backend setup from a terminal."""

from __future__ import annotations

import argparse
import json
import sys

from .steps import Installer, InstallError, bundled_backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m gfm_plugin.installer", description=__doc__)
    parser.add_argument("--venv", required=True, help="virtual environment to create or repair")
    parser.add_argument("--python", help="base Python >= 3.10 (default: found on this machine)")
    parser.add_argument("--torch-index", default="auto", help="auto (the build for this machine), "
                        "none (pip's configured registries only) or an index URL")
    parser.add_argument("--bundle", help="backend source folder (default: the plugin's own)")
    args = parser.parse_args(argv)
    try:
        installer = Installer(venv=args.venv, python=args.python, torch_index=args.torch_index,
                              bundle=args.bundle or bundled_backend(),
                              log=lambda line: print(line, flush=True))
        summary = installer.run()
    except KeyboardInterrupt:
        print("installer: interrupted; run it again to finish", file=sys.stderr)
        return 130
    except InstallError as exc:
        print(f"installer: error: {exc}", file=sys.stderr)
        for line in exc.tail:
            print(f"  | {line}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
