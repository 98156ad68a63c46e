"""``exch``'s surface: every command has --help, every one that prints data has --json,
and progress is drawn on a terminal only."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.config import DEFAULT_TOML
from tools import cli
from tools.progress import Progress

COMMANDS = [
    ["keys", "list"],
    ["keys", "create"],
    ["keys", "register"],
    ["keys", "revoke"],
    ["keys", "server"],
    ["order"],
    ["cancel"],
    ["book"],
    ["trades"],
    ["instruments"],
    ["top"],
    ["demo"],
    ["journal", "verify"],
    ["journal", "book"],
    ["journal", "backup"],
    ["journal", "new"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_and_json(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--json" in text and "--config" in text


def test_the_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for name in {c[0] for c in COMMANDS}:
        assert name in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_only():
    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        p = Progress("verifying s0", stream=stream)
        p.update(250, 1000)
        p.close()
    assert "\rverifying s0: 250 / 1,000 (25%)" in tty.getvalue()
    assert tty.getvalue().endswith("\r\x1b[K")  # the line is cleared for what follows
    assert pipe.getvalue() == ""


def test_no_gateway_is_one_clear_error(tmp_path, capsys):
    keys = ["--keys-dir", str(tmp_path / "keys")]
    assert cli.main(["keys", "server", "--create", *keys]) == 0
    assert cli.main(["keys", "create", "5", "--out", str(tmp_path / "b.key"), *keys]) == 0
    capsys.readouterr()
    nobody = "ipc://" + str(tmp_path / "nobody")  # no gateway there
    argv = ["--key", str(tmp_path / "b.key"), "--server-key", str(tmp_path / "keys/server.key")]
    argv += ["--endpoint", nobody, "--timeout", "0.3"]
    assert cli.main(["order", "ACME", "buy", "1", "10000", *argv]) == 2
    assert f"no answer from the gateway at {nobody}" in capsys.readouterr().err
    assert cli.main(["book", "ACME", *argv]) == 2
    assert "is the daemon running?" in capsys.readouterr().err


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "argv",
    [["daemon.cli", "config", "show"], ["tools.cli", "keys", "list", "--json"]],
    ids=["exchanged", "exch"],
)
def test_a_reader_that_goes_away_is_a_quiet_exit_141(argv, tmp_path):
    """`exchanged status | head`: no traceback when the pipe's reader has gone."""
    config = tmp_path / "exchange.toml"
    config.write_text(DEFAULT_TOML.replace("./var/keys", str(tmp_path / "keys")))
    (tmp_path / "keys" / "clients").mkdir(parents=True)
    env = {**os.environ, "EXCH_CONFIG": str(config)}  # both take it as their --config
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before it writes: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""


def test_exchanged_takes_its_config_from_exch_config(tmp_path):
    config = tmp_path / "exchange.toml"
    config.write_text(DEFAULT_TOML.replace('namespace = "exchanged"', 'namespace = "fromenv"'))
    shown = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "config", "show"],
        cwd=REPO,
        env={**os.environ, "EXCH_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and 'namespace = "fromenv"' in shown.stdout
