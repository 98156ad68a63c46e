"""[gateway] md_interval_ms: Depth and TopOfBook conflated to at most one publication per
interval, Trades at once, and the last state always shown, through a real daemon."""

import time

import msgspec
import pytest
import zmq
from daemon_harness import curve_socket

from gateway.protocol import Ack

INTERVAL_MS = 500


def configure(config):
    r = msgspec.structs.replace
    return r(config, gateway=r(config.gateway, md_interval_ms=INTERVAL_MS))


def _subscriber(daemon, client_id: int) -> zmq.Socket:
    sub = curve_socket(daemon, client_id, zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"ACME")
    sub.connect(daemon.config.gateway.pub[0])
    return sub


def _received(sub: zmq.Socket, seconds: float) -> list[tuple[float, dict]]:
    out, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sub.poll(int(left * 1000)):
            _topic, body = sub.recv_multipart()
            out.append((time.monotonic(), msgspec.msgpack.decode(body)))
    return out


@pytest.mark.timeout(240)
def test_depth_goes_out_at_most_once_per_interval_and_shows_the_last_state(daemon):
    daemon.start()
    sub = _subscriber(daemon, 31)
    bot = daemon.client(32)
    try:
        time.sleep(0.5)  # the subscription reaches the gateway
        _received(sub, 1.0)  # nothing old in the way
        for i in range(8):  # eight levels, faster than the interval
            assert isinstance(bot.new_order("ACME", "buy", 1, px=9_000 - 10 * i), Ack)
        sell = bot.new_order("ACME", "sell", 1, px=9_000, stp="none")  # a trade, at once
        assert isinstance(sell, Ack)
        got = _received(sub, 2.5)
    finally:
        bot.close()
        sub.close()
    depth = [(t, m) for t, m in got if m["t"] == "D"]
    trades = [m for _, m in got if m["t"] == "T"]
    assert trades and trades[0]["prints"] == [[9_000, 1]]
    assert 1 <= len(depth) <= 3, [m for _, m in depth]
    gaps = [b[0] - a[0] for a, b in zip(depth, depth[1:], strict=False)]
    assert all(g >= INTERVAL_MS / 1000 * 0.8 for g in gaps), gaps
    last = depth[-1][1]
    assert [level[0] for level in last["bids"]] == [8_990, 8_980, 8_970, 8_960, 8_950]
