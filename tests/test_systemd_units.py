"""The unit files in systemd/: well-formed (``systemd-analyze verify`` where it exists, and
parsed here always), ordered as the daemon needs, sandboxed without losing /dev/shm,
and every command they run exists and accepts its arguments."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
SERVICES = ("exchange-rings.service", "exchange-shard@.service", "exchange-gateway.service")
STATE_DIR = "/var/lib/exchanged"


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a key may repeat); comments and blank lines skipped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[([A-Za-z]+)\]", line):
            current = sections.setdefault(m.group(1), {})
            continue
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)=(.*)", line)
        assert m and current is not None, f"{path.name}:{n}: not a key=value in a section: {line}"
        current.setdefault(m.group(1), []).append(m.group(2).strip())
    return sections


def one(unit: dict, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}: {values}"
    return values[0]


def words(unit: dict, section: str, key: str) -> set[str]:
    return {w for v in unit.get(section, {}).get(key, []) for w in v.split()}


@pytest.fixture(scope="module")
def units():
    found = {p.name: parse(p) for p in sorted(UNITS.iterdir())}
    assert set(found) == {*SERVICES, "exchange.target"}
    return found


def scripts() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def test_every_service_restarts_on_failure_with_limits_and_a_sandbox(units):
    for name in SERVICES:
        u = units[name]
        assert one(u, "Service", "Restart") == "on-failure", name
        assert one(u, "Service", "LimitMEMLOCK") == "infinity", name
        assert int(one(u, "Service", "LimitNOFILE")) >= 65536, name
        assert one(u, "Service", "ProtectSystem") == "strict", name
        assert one(u, "Service", "NoNewPrivileges") == "yes", name
        assert one(u, "Service", "PrivateTmp") == "yes", name
        writable = words(u, "Service", "ReadWritePaths")
        assert writable == {STATE_DIR}, name  # the journals, the keys and Numba's cache
        env = dict(v.split("=", 1) for v in u["Service"]["Environment"])
        assert env["NUMBA_CACHE_DIR"].startswith(STATE_DIR + "/"), name  # the rest is read-only
        assert one(u, "Service", "WorkingDirectory") == STATE_DIR, name
        # the rings live in /dev/shm: every unit must see the host's
        for key in ("PrivateDevices", "PrivateIPC", "MemoryDenyWriteExecute"):
            assert key not in u["Service"], (name, key)
        assert one(u, "Service", "RemoveIPC") == "no", name
        assert one(u, "Unit", "PartOf") == "exchange.target", name
        assert one(u, "Install", "WantedBy") == "exchange.target", name


def test_the_rings_owner_comes_first_and_goes_last(units):
    rings = units["exchange-rings.service"]
    assert one(rings, "Service", "Type") == "notify"  # ready only once the rings exist
    for name in ("exchange-shard@.service", "exchange-gateway.service"):
        u = units[name]
        assert words(u, "Unit", "Requires") == {"exchange-rings.service"}, name
        assert words(u, "Unit", "After") == {"exchange-rings.service"}, name
    # the gateway after every shard: it stops first, and the shards drain what it sent
    assert words(units["exchange-shard@.service"], "Unit", "Before") == {"exchange-gateway.service"}
    target = units["exchange.target"]
    assert words(target, "Unit", "Wants") == {"exchange-rings.service", "exchange-gateway.service"}
    assert one(target, "Install", "WantedBy") == "multi-user.target"


def test_every_command_exists_and_takes_its_arguments(units):
    """ExecStart names a console script of the project, run with the same role and
    options as the supervisor's children; its parser accepts them (checked with
    --help at the end, which argparse reaches only if what precedes it is valid)."""
    entry = scripts()
    roles = set()
    for name in SERVICES:
        command = one(units[name], "Service", "ExecStart").replace("%i", "s0").split()
        exe, args = Path(command[0]), command[1:]
        assert exe.is_absolute() and exe.name in entry, command
        module, func = entry[exe.name].split(":")
        code = f"import sys, {module} as m; sys.exit(m.{func}(sys.argv[1:]))"
        out = subprocess.run(
            [sys.executable, "-c", code, *args, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (command, out.stderr)
        roles.add(args[args.index("--role") + 1])
        assert args[args.index("--config") + 1] == "/etc/exchanged/exchange.toml"
    assert roles == {"rings", "shard", "gateway"}
    # a mistyped role would not pass the same check
    bad = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "run", "--role", "ring", "--help"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify(tmp_path):
    """With the commands pointed at this checkout's virtualenv (the units name the
    installed path, which this machine does not have)."""
    exe = REPO / ".venv" / "bin" / "exchanged"
    if not exe.exists():
        pytest.skip("the virtualenv has no exchanged script")
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/opt/exchanged/.venv/bin/exchanged", str(exe))
        (tmp_path / unit.name).write_text(text)
    names = ["exchange.target", *SERVICES]
    names = [n.replace("@.", "@s0.") for n in names]
    out = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_the_shard_unit_restarts_what_the_supervisor_restarts(units):
    """A code a restart cannot cure (``NO_RESTART``) stops both from restarting a shard;
    the gateway and the rings owner exit with 2 of them at most."""
    from exchange.exitcodes import EXIT_USAGE, NO_RESTART

    prevent = words(units["exchange-shard@.service"], "Service", "RestartPreventExitStatus")
    assert {int(c) for c in prevent} == set(NO_RESTART)
    for name in ("exchange-rings.service", "exchange-gateway.service"):
        prevent = words(units[name], "Service", "RestartPreventExitStatus")
        assert {int(c) for c in prevent} == {EXIT_USAGE}, name


def test_shards_and_gateway_tell_systemd_when_they_serve_and_that_they_live(units):
    """Type=notify: started once READY=1 (tests/test_systemd_roles.py checks that they
    send it, and WATCHDOG=1 within half of WatchdogSec)."""
    for name in ("exchange-shard@.service", "exchange-gateway.service"):
        u = units[name]
        assert one(u, "Service", "Type") == "notify", name
        assert one(u, "Service", "NotifyAccess") == "main", name
        assert 0 < int(one(u, "Service", "WatchdogSec")) <= 30, name
        assert int(one(u, "Service", "TimeoutStartSec")) >= 300, name  # compiling, recovering
