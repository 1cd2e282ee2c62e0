"""Run the CLI entry point in-process, the way a shell would see it: exit code, stdout, stderr."""

import pytest

from hawk_cli.cli.app import main


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err
