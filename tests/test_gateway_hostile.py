"""A client that takes the gateway's resources, against the real processes: many
connections, huge multi-part messages, housekeeping that fails; and the open-file
limit the processes run with."""

import resource
import threading
import time

import psutil
import pytest
import zmq
from gateway_harness import GatewayRig

from gateway.client import AuthError
from gateway.codec import decode_reply
from gateway.keys import load_secret_certificate
from gateway.protocol import Heartbeat, Reject

CAP = 4
FRAMES = 300_000

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = GatewayRig(tmp_path_factory.mktemp("hostile"), max_connections_per_client=CAP)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # what `make run` from a shell passes on; the processes must raise it themselves
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard // 2), hard))
        try:
            r.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        yield r
    finally:
        r.close()


def _soft_limit(pid: int) -> tuple[int, int]:
    limits = psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)
    return limits[0], limits[1]


def test_every_process_raises_its_open_file_limit_to_the_hard_limit(rig):
    for name, proc in rig.procs.items():
        soft, hard = _soft_limit(proc.pid)
        assert soft == hard, f"{name}: soft {soft}, hard {hard}"


def test_a_client_past_its_connection_cap_is_refused_and_the_others_still_work(rig):
    mine = [rig.client(1) for _ in range(CAP)]  # each answered: each connection is up
    for c in mine:
        assert isinstance(c.heartbeat(), Heartbeat)
    with pytest.raises(AuthError, match="refused"):
        rig.client(1, timeout=5)
    for c in mine:
        assert isinstance(c.heartbeat(), Heartbeat)
    assert isinstance(rig.client(2).heartbeat(), Heartbeat)
    mine.pop().close()  # a place comes free once the gateway sees the close
    deadline = time.monotonic() + 10
    while True:
        try:
            again = rig.client(1, timeout=2)
            break
        except AuthError:
            assert time.monotonic() < deadline, "the closed connection's place never came back"
    assert isinstance(again.heartbeat(), Heartbeat)
    log = (rig.tmp / "gateway.log").read_text()
    assert log.count("the client is at its cap") >= 1 and '"client": 1' in log
    for c in [*mine, again]:
        c.close()


def test_a_message_of_many_frames_is_refused_invalid_in_bounded_memory(rig):
    gateway = psutil.Process(rig.procs["gateway"].pid)
    other = rig.client(3)
    assert isinstance(other.heartbeat(), Heartbeat)
    public, secret = load_secret_certificate(rig.secrets[4])
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.sndhwm = 0
    dealer.curve_serverkey = rig.server_key
    dealer.curve_publickey, dealer.curve_secretkey = public, secret
    worst = [0.0]
    done = threading.Event()

    def meanwhile():
        while not done.is_set():
            t = time.monotonic()
            assert isinstance(other.heartbeat(), Heartbeat)
            worst[0] = max(worst[0], time.monotonic() - t)
            time.sleep(0.01)

    try:
        dealer.connect(rig.endpoints["tcp"][0])
        before = gateway.memory_info().rss
        watcher = threading.Thread(target=meanwhile)
        watcher.start()
        try:
            for _ in range(3):
                for _ in range(FRAMES - 1):
                    dealer.send(b"x", zmq.SNDMORE)
                dealer.send(b"x")
                assert dealer.poll(60_000)
                reply = decode_reply(dealer.recv())
                assert isinstance(reply, Reject)
                assert (reply.code, reply.field) == ("invalid", "$")
                assert reply.reason == f"a request is exactly one frame, got {FRAMES}"
        finally:
            done.set()
            watcher.join()
        grown = gateway.memory_info().rss - before
    finally:
        dealer.close()
    # libzmq held each message whole (~20 MB); the gateway gave it back after each
    assert grown < 8 << 20, f"the gateway kept {grown / 1e6:.1f} MB"
    assert worst[0] < 1.0, f"another client waited {worst[0]:.2f} s"
    assert isinstance(other.heartbeat(), Heartbeat)


def test_housekeeping_that_fails_keeps_the_gateway_serving_and_stoppable(rig):
    c = rig.client(5)
    clients = rig.keys_dir / "clients"
    aside = rig.keys_dir / "clients.aside"
    clients.rename(aside)
    clients.write_text("not a directory: every rescan fails (as with EMFILE)")
    try:
        time.sleep(1.5)  # a key reload was due in there
        assert isinstance(c.heartbeat(), Heartbeat)
        other = rig.client(6)  # the handshake's rescan fails; the last good keys admit it
        assert isinstance(other.heartbeat(), Heartbeat)
    finally:
        clients.unlink()
        aside.rename(clients)
    log = (rig.tmp / "gateway.log").read_text()
    assert log.count("client keys not reloaded") == 1, log[-3000:]
    t = time.monotonic()
    assert rig.stop("gateway", timeout=10) == 0
    assert time.monotonic() - t < 5
    rig.start_gateway()
    assert isinstance(rig.client(5).heartbeat(), Heartbeat)
