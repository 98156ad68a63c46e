"""PROTOCOL.md's "order of checks", pair by pair: a request that breaks two rules is
answered by the earlier one, through a real gateway."""

import time

import msgspec
import pytest
from daemon_harness import ask, raw_dealer

from exchange.config import ClientLimits
from gateway.keys import revoke_client

THROTTLED, LIMITED = 20, 21  # a client with a bucket of one token; one with small limits


def configure(config):
    clients = [
        ClientLimits(client=THROTTLED, orders_per_second=1, burst=1),
        ClientLimits(client=LIMITED, max_order_qty=10, price_collar_bps=100),
    ]
    return msgspec.structs.replace(config, clients=clients)


def _order(cid: int, **fields) -> dict:
    return {"t": "N", "cid": cid, "sym": "ACME", "side": "buy", "qty": 1, "px": 9_000, **fields}


def _refused(reply: dict) -> tuple[str, str, str]:
    assert reply["t"] == "J", reply
    return reply["code"], reply["field"], reply["reason"].split(":")[0]


@pytest.mark.timeout(240)
def test_each_check_answers_before_the_next(daemon):
    daemon.start()
    throttled, limited, other = (raw_dealer(daemon, c) for c in (THROTTLED, LIMITED, 22))
    try:
        # 3 before 4: a malformed request is `invalid` even with no token left
        assert ask(throttled, _order(1))["t"] == "A"  # its one token
        assert _refused(ask(throttled, _order(2, qty="x")))[:2] == ("invalid", "$.qty")
        # 4 before 5: no token left answers before an unknown instrument
        assert _refused(ask(throttled, _order(3, sym="NOPE")))[0] == "rate_limited"
        # 5 before 6: an unknown instrument before a price off its band
        assert _refused(ask(other, _order(4, sym="NOPE", px=30_000)))[:2] == (
            "not_found",
            "$.sym",
        )
        # 6 before 7: a used key with a quantity above the book's max is the grid's
        assert ask(other, _order(5, ik=55))["t"] == "A"
        assert _refused(ask(other, _order(6, ik=55, qty=100_001))) == (
            "invalid",
            "$.qty",
            "qty_above_max",
        )
        assert _refused(ask(other, _order(7, ik=55, px=30_000)))[2] == "price_outside_band"
        # 6 before 8: the grid before the client's own limits
        assert _refused(ask(limited, _order(8, qty=100_001)))[2] == "qty_above_max"
        assert _refused(ask(limited, _order(9, px=30_000)))[2] == "price_outside_band"
        # 7 before 8: a used key skips the risk checks (a retry is the original outcome;
        # another instrument's key is a conflict even over a limit)
        first = ask(limited, _order(10, qty=5, px=9_950, ik=77))  # inside its 1 % collar
        assert first["t"] == "A", first
        again = ask(limited, _order(11, qty=5, px=9_950, ik=77))
        assert (again["t"], again["oid"], again["dup"]) == ("A", first["oid"], True)
        over = _order(12, sym="BOLT", qty=50, px=2_500, ik=77)  # on BOLT's grid, over 10
        assert _refused(ask(limited, over))[:2] == (
            "conflict",
            "$.ik",
        )
        # 8 before 10: the client's limit before the book's post-only rule
        assert ask(other, _order(13, side="sell", px=10_000, qty=20))["t"] == "A"
        crossing = _order(14, px=10_000, qty=20, post_only=True)
        assert _refused(ask(limited, crossing))[0] == "max_order_qty"
        assert _refused(ask(limited, {**crossing, "cid": 15, "qty": 5}))[2] == (
            "post_only_would_take"
        )
        # 2 before 3: a revoked key is `unauthenticated`, whatever the frame holds
        revoke_client(daemon.config.gateway.keys_dir, 22)
        deadline = time.monotonic() + 10
        while True:
            got = ask(other, {"t": "N", "cid": 16, "qty": "x"})
            if got["code"] == "unauthenticated" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (got["code"], got["cid"]) == ("unauthenticated", 16), got
    finally:
        for s in (throttled, limited, other):
            s.close()
