"""The gateway's warm-up reaches every kernel its Python code calls."""

import subprocess
import sys

from gateway_harness import REPO, GatewayRig

from gateway.client import order
from gateway.protocol import Ack

# In a fresh process (a kernel has signatures only once something called it): every
# module the gateway loads, its warm-ups as it runs them, then every kernel of ours the
# gateway's Python code calls (defined in gateway/, or named in a gateway module's code)
# must be compiled, or be called from a compiled kernel that is (Numba compiles a callee
# into its caller). Found, not listed: a new kernel cannot slip past.
SCRIPT = """
import inspect, pathlib, re, sys
from exchange.config import DEFAULT_TOML, parse_config
import gateway.server
from gateway.warmup import warm_up
from numba.core.registry import CPUDispatcher
from shm.warmup import warm_up as warm_up_rings
warm_up_rings()
warm_up(parse_config(DEFAULT_TOML))
kernels = {}
for name, module in list(sys.modules.items()):
    if name.partition(".")[0] in ("shm", "exchange", "gateway"):
        for obj in list(vars(module).values()):
            if isinstance(obj, CPUDispatcher):
                kernels[obj.py_func.__module__ + "." + obj.py_func.__name__] = obj
texts = [p.read_text() for p in pathlib.Path("gateway").glob("*.py")]
def called_by_gateway(k):
    mod, _, n = k.rpartition(".")
    short = mod.rpartition(".")[2]
    named = re.compile(
        rf"\\b{short}\\.{n}\\(|^from {re.escape(mod)} import[^\\n]*\\b{n}\\b|^    {n},$", re.M
    )
    return mod.startswith("gateway.") or any(named.search(t) for t in texts)
compiled = {k for k, d in kernels.items() if d.signatures}
grew = True
while grew:
    grew = False
    for k in sorted(set(kernels) - compiled):
        call = re.compile(rf"\\b{re.escape(kernels[k].py_func.__name__)}\\(")
        if any(call.search(inspect.getsource(kernels[c].py_func)) for c in compiled):
            compiled.add(k)
            grew = True
called = sorted(k for k in kernels if called_by_gateway(k))
print(len(called))
for k in called:
    if k not in compiled:
        print(k)
"""


def test_warm_up_compiles_every_called_kernel():
    # a fresh process: a kernel has signatures only once something called it
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    found, *missed = out.stdout.split()
    assert int(found) >= 20, out.stdout  # the finding finds (mirror, risk, keys, table...)
    assert missed == [], f"not warmed up: {missed}"


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
