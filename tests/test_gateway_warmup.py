"""The gateway's warm-up reaches every kernel its Python code calls."""

import subprocess
import sys

from tests.gateway_harness import REPO

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
