"""Issue #18 item 3, through a real gateway: no Reject uses an idempotency key, only
an order the book accepted does (PROTOCOL.md section 7). A refused keyed order,
whoever refused it (the book, the grid, the client's limits), leaves its key free."""

import msgspec
import pytest
from daemon_harness import ask, raw_dealer

from exchange.config import ClientLimits

LIMITED, SELLER, BUYER = 21, 22, 23  # LIMITED: orders of at most 10


def configure(config):
    return msgspec.structs.replace(config, clients=[ClientLimits(client=LIMITED, max_order_qty=10)])


def _order(cid: int, **fields) -> dict:
    return {"t": "N", "cid": cid, "sym": "ACME", "side": "buy", "qty": 1, "px": 9_000, **fields}


def _refused(reply: dict) -> tuple[str, str, bool]:
    assert reply["t"] == "J", reply
    return reply["code"], reply["reason"].split(":")[0], reply["dup"]


@pytest.mark.timeout(240)
def test_a_refused_keyed_order_leaves_its_key_free(daemon):
    daemon.start()
    seller, buyer, limited = (raw_dealer(daemon, c) for c in (SELLER, BUYER, LIMITED))
    try:
        # the book's refusal: a post-only buy that would take the resting sell
        sell = ask(seller, _order(1, side="sell", px=10_000))
        assert sell["t"] == "A", sell
        post_only = _order(2, px=10_000, post_only=True, ik=500)
        assert _refused(ask(buyer, post_only)) == ("invalid", "post_only_would_take", False)
        # its retry is evaluated again: still crossing, refused again, not as a duplicate
        retry = ask(buyer, {**post_only, "cid": 3})
        assert _refused(retry) == ("invalid", "post_only_would_take", False)
        gone = ask(seller, {"t": "C", "cid": 4, "sym": "ACME", "oid": sell["oid"]})
        assert gone["t"] == "X", gone
        # the crossing order gone, the same request is accepted, new
        ack = ask(buyer, {**post_only, "cid": 5})
        assert (ack["t"], ack["dup"]) == ("A", False), ack
        # and now the key is used: its retry is the original Ack again
        again = ask(buyer, {**post_only, "cid": 6})
        assert (again["t"], again["oid"], again["seq"], again["dup"]) == (
            "A",
            ack["oid"],
            ack["seq"],
            True,
        )
        other = ask(buyer, {**post_only, "cid": 7, "px": 9_990})
        assert _refused(other)[0] == "conflict"

        # a different order under the key of one the book refused is accepted
        sell = ask(seller, _order(8, side="sell", px=10_100))
        refused = _order(9, px=10_100, post_only=True, ik=501)
        assert _refused(ask(buyer, refused))[1] == "post_only_would_take"
        taken = ask(buyer, {**refused, "cid": 10, "px": 9_900})
        assert (taken["t"], taken["dup"]) == ("A", False), taken

        # the client's limits: over max_order_qty, then the key takes an order
        over = _order(11, qty=20, ik=600)
        assert _refused(ask(limited, over)) == ("max_order_qty", "max_order_qty", False)
        ok = ask(limited, {**over, "cid": 12, "qty": 5})
        assert (ok["t"], ok["dup"]) == ("A", False), ok
        dup = ask(limited, {**over, "cid": 13, "qty": 5})
        assert (dup["t"], dup["oid"], dup["dup"]) == ("A", ok["oid"], True)

        # the grid: a quantity above the instrument's max, then the same key is new
        grid = _order(14, qty=100_001, ik=700)
        assert _refused(ask(buyer, grid))[1] == "qty_above_max"
        fine = ask(buyer, {**grid, "cid": 15, "qty": 2})
        assert (fine["t"], fine["dup"]) == ("A", False), fine
    finally:
        for s in (seller, buyer, limited):
            s.close()
