"""shmring CLI usage: --help and -h (python -m shmring and the installed entry
point), --version, usage errors, invalid segment names, and errors on one
line.

Runs the ``shmring`` console script as a real subprocess (tests/_cli_helpers.py).
"""

from __future__ import annotations

import os
import re

import pytest

import shmring

from _cli_helpers import ENTRY_POINT, assert_clean_failure, cli, words


@pytest.mark.timeout(60)
def test_entry_point_help() -> None:
    assert ENTRY_POINT.is_file() and os.access(ENTRY_POINT, os.X_OK), ENTRY_POINT
    result = cli("--help", entry_point=True)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    for command in ("ls", "inspect", "rm", "gc", "demo"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), f"{command} missing from --help"
    assert result.stderr == ""


@pytest.mark.timeout(60)
def test_short_help_option_and_subcommand_help() -> None:
    result = cli("-h")
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    result = cli("rm", "--help")
    assert result.returncode == 0
    assert "--force" in result.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("entry_point", [False, True], ids=["python-m", "entry-point"])
def test_version(entry_point: bool) -> None:
    result = cli("--version", entry_point=entry_point)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"version {shmring.__version__}")
    assert shmring.__version__ == "0.1.0"


@pytest.mark.timeout(60)
def test_unknown_command_and_missing_argument_are_usage_errors() -> None:
    for args in (("frobnicate",), ("rm",), ("inspect",)):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Usage:" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["inspect", "rm"])
@pytest.mark.parametrize(
    "bad",
    ["a/b", "", ".hidden", "/.hidden", "x" * 255, "with space", "../etc", "semi;colon", "caf\u00e9"],
    ids=["slash", "empty", "hidden", "slash-hidden", "too-long", "space", "dotdot", "semicolon", "non-ascii"],
)
def test_invalid_names_fail_cleanly(command: str, bad: str) -> None:
    result = cli(command, bad)
    assert_clean_failure(result)
    assert "invalid segment name" in words(result.stderr)


@pytest.mark.timeout(60)
def test_long_error_messages_stay_on_one_line() -> None:
    result = cli("inspect", "a/b")
    assert_clean_failure(result)
    assert len(result.stderr.splitlines()) == 1, result.stderr
