"""Every command's --help prints (argparse formats help texts: a literal % must not break it)."""

from __future__ import annotations

import pytest

from gfm_backend.cli import main

COMMANDS = [["classify"], ["finetune"], ["export"], ["pretrain"], ["demo"], ["serve"], ["jobs"],
            ["geopile", "build"], ["weights", "get"], ["weights", "import"], ["bench", "classify"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_prints(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
