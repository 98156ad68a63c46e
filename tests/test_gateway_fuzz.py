"""Hostile input against the gateway process, and a bot that speaks plain msgpack.

The fuzz test sends well over 10,000 malformed or hostile frames over tcp and
ipc: random bytes, truncated and corrupted requests, wrong types, unknown
tags and fields, values out of range or off the instrument's grid, unknown
symbols, foreign order ids, nesting bombs, oversized and multi-frame
messages. Each one must get exactly one Reject, nothing may reach a shard
(the request rings' cursors do not move), and the gateway must serve
normally afterwards.
"""

import random
from pathlib import Path

import msgspec
import pytest
import zmq
from gateway_harness import GatewayRig

from exchange.topology import request_ring
from gateway.codec import decode_reply, decode_request
from gateway.keys import load_secret_certificate
from gateway.protocol import MAX_FRAME_BYTES, Ack, ProtocolError, Reject
from shm.ring import inspect_ring

DOC = Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md"
FRAMES = 12_000
WINDOW = 400  # frames in flight per connection

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = GatewayRig(tmp_path_factory.mktemp("fuzz"))
    try:
        r.start()
        yield r
    finally:
        r.close()


def valid_requests(rng: random.Random) -> list[dict]:
    """Well-formed requests, as material for corruption (never sent as they are)."""
    order = {"sym": "ACME", "side": "buy", "qty": 5, "px": 10_000, "ik": 7, "coid": "c"}
    return [
        {"t": "N", "cid": rng.randrange(1, 1 << 64), **order},
        {"t": "B", "cid": 3, "orders": [order, {**order, "side": "sell"}]},
        {"t": "C", "cid": 4, "sym": "BOLT", "oid": 12},
        {"t": "R", "cid": 5, "sym": "ACME", "oid": 12, "px": 10_010, "qty": 3},
        {"t": "M", "cid": 6},
        {"t": "S", "cid": 7, "sym": "ETH-USD", "oid": 99},
        {"t": "K", "cid": 8, "sym": "BTC-USD", "depth": 3},
        {"t": "H", "cid": 9, "v": 1},
    ]


WRONG_VALUES = [
    None,
    -1,
    0,
    1 << 63,
    (1 << 64) - 1,
    1.5,
    "",
    "x" * 40,
    "buy",
    True,
    [],
    {},
    [1, 2],
    {"a": 1},
    b"bytes",
]

HOSTILE = [
    # decodable, and refused by the gateway's own checks
    {"t": "N", "cid": 1, "sym": "NOPE", "side": "buy", "qty": 1, "px": 10_000},
    {"t": "N", "cid": 1, "sym": "BOLT", "side": "buy", "qty": 10, "px": 2_501},  # off tick
    {"t": "N", "cid": 1, "sym": "BOLT", "side": "buy", "qty": 15, "px": 2_500},  # off lot
    {"t": "N", "cid": 1, "sym": "ACME", "side": "buy", "qty": 100_001, "px": 10_000},
    {"t": "N", "cid": 1, "sym": "ACME", "side": "buy", "qty": 1, "px": 4_999},  # band
    {"t": "N", "cid": 1, "sym": "ACME", "side": "buy", "qty": 1, "px": 10, "type": "market"},
    {"t": "N", "cid": 1, "sym": "ACME", "side": "buy", "qty": 1, "type": "market"},  # gtc
    {"t": "N", "cid": 1, "sym": "ACME", "side": "buy", "qty": 1, "tif": "ioc"},  # no px
    {"t": "N", "cid": 1, "sym": "BOLT", "side": "buy", "qty": 50, "px": 2_500, "display": 15},
    {"t": "N", "cid": 1, "sym": "ACME", "side": "buy", "qty": 5, "px": 10_000, "display": 6},
    {
        "t": "N",
        "cid": 1,
        "sym": "ACME",
        "side": "buy",
        "qty": 5,
        "px": 9_000,
        "display": 1,
        "tif": "ioc",
    },
    {"t": "N", "cid": 1, "sym": "ACME", "side": "buy", "qty": 1, "px": 9000, "client": 2},
    {"t": "C", "cid": 1, "sym": "ACME", "oid": (1 << 40) + 5},  # an id of shard s1
    {"t": "R", "cid": 1, "sym": "BTC-USD", "oid": 5, "px": 6_000_000, "qty": 1},  # of s0
    {"t": "S", "cid": 1, "sym": "ACME", "oid": (1 << 40) + 1},
    {"t": "K", "cid": 1, "sym": "ACME", "depth": 101},
    {"t": "H", "cid": 1, "v": 2},
    {"t": "M", "cid": 1, "sym": "ACMEX"},
    {"t": "B", "cid": 1, "orders": []},
    {"t": "B", "cid": 1, "orders": [{"sym": "ACME", "side": "buy", "qty": 1, "px": 1}] * 257},
    {"t": "Z", "cid": 1},
    {"t": "A", "cid": 1, "sym": "ACME", "oid": 1, "seq": 1},  # a reply tag
    {"cid": 1, "sym": "ACME"},
]


def _decodes(frame: bytes) -> bool:
    try:
        decode_request(frame)
    except ProtocolError:
        return False
    return True


def hostile_frames(seed: int, n: int):
    """``n`` messages (each a list of frames) that the gateway must refuse, every kind mixed.

    A mutation that happens to leave a valid request (a flipped byte inside a
    string, a wrong value that is in range after all) is left out.
    """
    rng = random.Random(seed)
    encode = msgspec.msgpack.encode
    valid = [encode(r) for r in valid_requests(rng)]
    out = []
    while len(out) < n:
        before = len(out)
        kind = rng.randrange(10)
        if kind == 0:  # random bytes
            out.append([rng.randbytes(rng.randrange(0, 300))])
        elif kind == 1:  # a request cut short
            frame = rng.choice(valid)
            out.append([frame[: rng.randrange(0, len(frame))]])
        elif kind == 2:  # bytes flipped; skip the rare flip that leaves a valid request
            frame = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            out.append([bytes(frame)])
        elif kind in (3, 4):  # one field of a valid request given a wrong value
            req = rng.choice(valid_requests(rng))
            key = rng.choice([k for k in req if k != "t"])
            req[key] = rng.choice(WRONG_VALUES)
            if req.get("t") == "M" and key == "sym" and req[key] is None:
                req[key] = 5  # MassCancel without sym is valid: make it wrong
            out.append([encode(req)])
        elif kind == 5:  # an unknown field, or a missing one
            req = rng.choice(valid_requests(rng))
            if rng.random() < 0.5:
                req[rng.choice(["client", "user", "owner", "x", "T"])] = 1
            else:
                required = {"N": ["sym", "side", "qty", "cid"], "B": ["orders", "cid"]}
                req.pop(rng.choice(required.get(req["t"], ["cid"])))
            out.append([encode(req)])
        elif kind == 6:
            out.append([encode(rng.choice(HOSTILE))])
        elif kind == 7:  # not a map, or nested deep (built as bytes: encoders refuse to)
            depth = rng.choice([1, 3, 50, 5000, 100_000])
            level = rng.choice([b"\x91", b"\x81\xa1t", b"\x82\xa1t\xa1N\xa3sym"])
            leaf = rng.choice([b"\xc0", b"\x01", b"\xcb" + bytes(8), b"\x90", b"\x80"])
            out.append([level * depth + leaf])
        elif kind == 8:  # more than one frame
            out.append([rng.choice(valid) for _ in range(rng.randrange(2, 4))])
        elif rng.random() < 0.05:  # oversized, up to the size the gateway still reads
            size = rng.randrange(MAX_FRAME_BYTES + 1, 4 * MAX_FRAME_BYTES)
            out.append([encode({"t": "H", "cid": 1, "v": 1, "pad": "x" * size})])
        if len(out) > before and kind != 6 and len(out[-1]) == 1 and _decodes(out[-1][0]):
            out.pop()
    return out


def run_frames(sock: zmq.Socket, messages: list) -> list:
    """Send every message (a window at a time); return every reply received."""
    replies = []
    sent = 0
    while len(replies) < len(messages):
        while sent < len(messages) and sent - len(replies) < WINDOW:
            sock.send_multipart(messages[sent])
            sent += 1
        assert sock.poll(10_000), f"no reply after {len(replies)} of {len(messages)}"
        while sock.poll(0):
            replies.append(decode_reply(sock.recv()))
    return replies


def fuzz(rig, seed: int, n: int) -> None:
    published = {s: inspect_ring(rig.ns, request_ring(s)).published for s in rig.shards}
    seqs = rig.last_seqs()
    messages = hostile_frames(seed=seed, n=n)
    half = len(messages) // 2
    for transport, part in (("tcp", messages[:half]), ("ipc", messages[half:])):
        c = rig.client(1, transport)
        replies = run_frames(c.socket, part)
        assert len(replies) == len(part)
        assert all(isinstance(r, Reject) for r in replies), [
            r for r in replies if not isinstance(r, Reject)
        ][:3]
        assert not c.socket.poll(200)  # exactly one reply each
        c.close()
    assert {s: inspect_ring(rig.ns, request_ring(s)).published for s in rig.shards} == published
    assert rig.last_seqs() == seqs
    assert rig.procs["gateway"].poll() is None
    c = rig.client(2)
    ack = c.new_order("ACME", "buy", 1, px=9_000)
    assert isinstance(ack, Ack)
    assert c.mass_cancel().n == 1


def test_ten_thousand_hostile_frames_change_nothing(rig):
    assert FRAMES >= 10_000
    fuzz(rig, seed=20240521, n=FRAMES)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_hundred_thousand_hostile_frames_change_nothing(rig):
    fuzz(rig, seed=7, n=200_000)


def test_a_frame_above_the_receive_limit_closes_only_that_connection(rig):
    c = rig.client(3)
    c.send_raw(b"\x00" * (16 * MAX_FRAME_BYTES + 1))
    assert not c.socket.poll(500)
    other = rig.client(4)
    assert isinstance(other.heartbeat(), msgspec.Struct)
    assert rig.procs["gateway"].poll() is None


def test_a_bot_with_nothing_but_zeromq_and_msgpack(rig):
    """Section 10 of PROTOCOL.md, and section 9's frame byte for byte."""
    public, secret = load_secret_certificate(rig.secrets[5])
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.curve_serverkey = rig.server_key
    dealer.curve_publickey, dealer.curve_secretkey = public, secret
    pack, unpack = msgspec.msgpack.encode, msgspec.msgpack.decode
    try:
        dealer.connect(rig.endpoints["ipc"][0])

        def ask_raw(frame: bytes, cid: int) -> dict:
            dealer.send(frame)
            while True:
                assert dealer.poll(10_000)
                reply = unpack(dealer.recv())
                if reply.get("cid") == cid:
                    return reply

        def ask(m: dict) -> dict:
            return ask_raw(pack(m), m["cid"])

        assert ask({"t": "H", "cid": 1, "v": 1}) == {"t": "H", "cid": 1, "v": 1}
        book = ask({"t": "K", "cid": 2, "sym": "ACME"})
        assert book["t"] == "K" and book["bids"] == [] and book["asks"] == []
        text = DOC.read_text()
        example = text[text.index("```hex") : text.index("```", text.index("```hex") + 6)]
        frame = bytes.fromhex(
            "".join(line.split("#")[0] for line in example.splitlines()[1:]).replace(" ", "")
        )
        ack = ask_raw(frame, 7)  # the worked example: buy 100 ACME at 10000, ik 1001
        assert (ack["t"], ack["sym"], ack["coid"], ack["dup"]) == ("A", "ACME", "bot1-0001", False)
        dup = ask_raw(frame, 7)  # the same frame again: the same order, acknowledged again
        assert (dup["t"], dup["oid"], dup["seq"], dup["dup"]) == ("A", ack["oid"], ack["seq"], True)
        status = ask({"t": "S", "cid": 8, "sym": "ACME", "oid": ack["oid"]})
        assert (status["t"], status["state"], status["qty"]) == ("O", "live", 100)
        cancelled = ask({"t": "C", "cid": 9, "sym": "ACME", "oid": ack["oid"]})
        assert (cancelled["t"], cancelled["qty"], cancelled["reason"]) == ("X", 100, "user")
        bad = ask({"t": "N", "cid": 10, "sym": "ACME", "side": "buy", "qty": "100", "px": 1})
        assert (bad["t"], bad["code"], bad["field"]) == ("J", "invalid", "$.qty")
    finally:
        dealer.close()
