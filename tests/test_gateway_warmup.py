"""The gateway's warm-up reaches every kernel its Python code calls."""

import subprocess
import sys

from gateway_harness import REPO, GatewayRig

from gateway.client import order
from gateway.protocol import Ack

# the kernels called from Python (the others are only called from these)
CALLED = {
    "gateway.mirror": ("apply_depth", "best_levels", "find_best"),
    "exchange.ordertable": ("find", "insert", "remove", "_rehash"),
    "gateway.positions": ("apply_trades",),
    "gateway.risk": ("fold", "load", "drop", "admit_pass"),
    "gateway.keyfilter": ("add", "may_hold", "may_hold_each"),
    "gateway.shardlink": ("_unseen",),
    "gateway.discard": ("_discard",),
}

SCRIPT = f"""
import importlib
from exchange.config import DEFAULT_TOML, parse_config
from gateway.warmup import warm_up
warm_up(parse_config(DEFAULT_TOML))
for mod, names in {CALLED!r}.items():
    m = importlib.import_module(mod)
    for n in names:
        if not getattr(m, n).signatures:
            print(mod + "." + n)
"""


def test_warm_up_compiles_every_called_kernel():
    # a fresh process: a kernel has signatures only once something called it
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "", f"not warmed up: {out.stdout.split()}"


def test_serving_compiles_nothing_the_warm_up_missed(tmp_path):
    # a kernel met with argument types the warm-up never passed it (a read-only array,
    # a one-element column that numpy calls contiguous) compiles on a client's order:
    # seconds on a cold cache. The gateway names such kernels when it stops.
    rig = GatewayRig(tmp_path)
    try:
        rig.start()
        with rig.client(1) as maker, rig.client(2) as taker:
            for px in (10_000, 10_001, 10_002):
                assert isinstance(maker.new_order("ACME", "sell", 5, px), Ack)
            ack = maker.new_order("ACME", "buy", 1, 9_990)
            maker.replace("ACME", ack.oid, 9_991, 2)
            maker.cancel("ACME", ack.oid)
            taker.new_order("ACME", "buy", 1, 10_000, tif="ioc")  # one level moves
            taker.new_order("ACME", "buy", 9, 10_002, tif="ioc")  # two levels move
            # runs long enough for the compiled passes; keyed, for the key screen
            taker.new_orders([order("BTC-USD", "buy", 1, 5_000_000 + 100 * i) for i in range(40)])
            maker.new_orders([order("BTC-USD", "sell", 2, 5_000_000, tif="ioc")] * 20)
            taker.book("BTC-USD")
            taker.positions()
            taker.trades("ACME", 1)
            taker.mass_cancel()
            maker.mass_cancel()
        assert rig.stop("gateway") == 0
        logs = rig.logs()
        assert '"stopped"' in logs
        assert "compiled while serving" not in logs, logs
    finally:
        rig.close()
