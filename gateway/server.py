"""The gateway process.

    python -m gateway.server [--config FILE] [--loop asyncio|poll]

``--loop`` is the sleeping loop (``gateway.loops``); ``[gateway] wait = "spin"``
in the config runs the spinning one instead, whatever ``--loop`` says.

Attaches to every shard's rings (the supervisor created them), binds the
ROUTER and PUB endpoints of the config as CURVE servers behind the ZAP handler
(its counter block, ``gateway.counters``, made first, says it is up), loads its
own state (``gateway.store``: a checkpoint of keys, positions and how far it read
each shard), asks every shard to serve what it has not read (``CMD_SYNC``) and
serves. It opens no shard's journal. SIGTERM or SIGINT: stop reading requests,
keep draining the event rings for up to ``DRAIN_SECONDS`` so requests in flight
get their replies, leave each event ring (the shards stop making commands of
their own: expiries, halts) and read what is left in it, write a last
checkpoint, remove the counter block, exit 0.
Exit 2: a bad config, keys directory (client keys, kill files) or ring, a state
directory that cannot be made, an endpoint that cannot be bound, or a live
gateway's counter block in the namespace. An exception that escapes the loop
(a bug) is logged and ends the process (exit 1, no checkpoint: the next start
reads more of the shards' history).
"""

import argparse
import signal
import sys
import time
import traceback

import psutil
import zmq

from exchange import logs, sdnotify, topology
from exchange.config import ConfigError, load_config
from exchange.exitcodes import EXIT_USAGE
from exchange.openfiles import raise_open_file_limit
from exchange.topology import symbols
from gateway.conns import Connections
from gateway.core import Gateway
from gateway.counters import GatewayCounters
from gateway.keys import KeysError, load_server_keys
from gateway.killswitch import KillError, KillList
from gateway.loops import LOOPS, choose
from gateway.protocol import MAX_FRAME_BYTES
from gateway.shardlink import ShardLink
from gateway.store import StoreError, open_store
from gateway.warmup import kernel_signatures, specialized_since
from gateway.warmup import warm_up as warm_up_gateway
from gateway.zap import KeyTable, ZapHandler
from shm.errors import ShmError
from shm.wait import strategy
from shm.warmup import warm_up as warm_up_rings

DRAIN_SECONDS = 2.0
ZAP_DOMAIN = b"exchange"
# Frames above the protocol's limit still get their "invalid" reply up to this
# size; a peer sending a larger one is disconnected by ZeroMQ before the
# gateway ever holds it in memory.
MAX_RECEIVE_BYTES = 16 * MAX_FRAME_BYTES
HWM = 100_000  # messages queued per connection before sends to it are dropped
LINGER_MS = 500


def _curve_server(ctx: zmq.Context, kind: int, public: bytes, secret: bytes) -> zmq.Socket:
    s = ctx.socket(kind)
    s.curve_server = True
    s.curve_publickey = public
    s.curve_secretkey = secret
    s.zap_domain = ZAP_DOMAIN
    # refuse every connection if the ZAP handler were missing, instead of admitting all
    s.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    s.linger = LINGER_MS
    s.sndhwm = HWM
    s.rcvhwm = HWM
    return s


def open_sockets(
    ctx: zmq.Context, config, keys_dir, conns: Connections
) -> tuple[zmq.Socket, zmq.Socket]:
    public, secret = load_server_keys(keys_dir)
    router = _curve_server(ctx, zmq.ROUTER, public, secret)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone peer raises: we forget it
    router.setsockopt(zmq.MAXMSGSIZE, MAX_RECEIVE_BYTES)
    pub = _curve_server(ctx, zmq.PUB, public, secret)
    conns.watch(router)
    conns.watch(pub)
    try:
        for endpoint in config.gateway.router:
            router.bind(endpoint)
        for endpoint in config.gateway.pub:
            pub.bind(endpoint)
    except zmq.ZMQError:
        router.close(0)
        pub.close(0)
        raise
    return router, pub


def drain(gw: Gateway, seconds: float) -> None:
    """After a stop: events only, until every request in flight is answered or time is up."""
    deadline = time.monotonic() + seconds
    while len(gw.inflight) and time.monotonic() < deadline:
        if not gw.step(take_requests=False):
            time.sleep(0.001)


def settle(gw: Gateway, links, seconds: float) -> None:
    """After the drain: leave each shard's event ring, so it makes no more commands of
    its own (EXPIRE ticks, halts: only while a gateway reads), once what it decided
    meanwhile is published; then read the rings to the end. A stopped venue's rings
    are left empty."""
    for link in links:
        if not link.events.leave(seconds):
            logs.warning("a shard was still publishing its own events", shard=link.name)
    while gw.step(take_requests=False):
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run the gateway process.")
    ap.add_argument("--config", help="TOML config file (default: the embedded one)")
    ap.add_argument("--loop", choices=sorted(LOOPS), default="asyncio", help="I/O loop")
    args = ap.parse_args(argv)
    logs.set_role("gateway")
    raise_open_file_limit()
    try:
        config = load_config(args.config)
        keys = KeyTable(config.gateway.keys_dir)
        load_server_keys(config.gateway.keys_dir)
        kills = KillList(config.gateway.keys_dir)
    except (ConfigError, KeysError, KillError) as e:
        logs.error("cannot start", error=str(e))
        return EXIT_USAGE
    # before any socket: a cold Numba compile on the first request would hold the
    # GIL for seconds and stall the ZAP thread's CURVE handshakes
    logs.info("compiled", seconds=round(warm_up_rings() + warm_up_gateway(config), 3))
    if config.gateway.cpus:
        psutil.Process().cpu_affinity(config.gateway.cpus)
    wait = strategy(config.gateway.wait)
    if wait.spins and len(config.gateway.cpus) < 2:
        # the ZeroMQ I/O thread (CURVE, TCP), started below, inherits the pinning: with
        # one core it shares it with the spinning loop
        logs.warning(
            "wait = spin with fewer than 2 cpus: the gateway busy-waits on a core it shares",
            cpus=config.gateway.cpus,
        )
    links = []
    ctx = zmq.Context()
    counters = zap = router = pub = store = None
    conns = Connections(ctx, config.gateway.max_connections_per_client)
    try:
        # first: the block says the gateway is up (its writes are compiled: the warm-up)
        counters = GatewayCounters(config.shm.namespace, [s.name for s in config.shards])
        for i in range(len(config.shards)):
            links.append(ShardLink(config, i))
        state_dir = topology.gateway_state_dir(config)
        store, cp, problem = open_store(state_dir, config.gateway.key_window, symbols(config))
        if problem is not None:
            logs.error("gateway state refused; rebuilding it from the shards", error=problem)
        zap = ZapHandler(ctx, keys, conns)  # bound before any CURVE socket, so none is unguarded
        router, pub = open_sockets(ctx, config, config.gateway.keys_dir, conns)
    except (ShmError, StoreError, zmq.ZMQError) as e:
        logs.error("cannot start", error=str(e))
        for link in links:
            link.close()
        if store is not None:
            store.close()
        if zap is not None:
            zap.close()
        conns.close()
        if counters is not None:
            counters.unlink()  # a gateway that cannot serve leaves no block saying it is up
        ctx.term()
        return EXIT_USAGE
    gw = Gateway(config, router, pub, keys, links, kills, counters, store, conns)
    try:
        gw.load(cp)

        def stop(signum, frame):
            gw.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        logs.info(
            "serving",
            router=config.gateway.router,
            pub=config.gateway.pub,
            clients=len(keys),
            loop=args.loop,
            wait=wait.name,
        )
        # sockets bound, state loaded: it serves (a shard not synced yet answers
        # `unavailable` for its instruments meanwhile)
        sdnotify.notify("READY=1", f"STATUS={gw.status()}")
        warmed = kernel_signatures()  # what serving compiles from here, a client waits for
        try:
            choose(args.loop, wait)(gw, zap)
        except Exception as e:
            # a bug: stop (the supervisor or systemd starts another), never serve half-broken
            logs.error("the loop failed; stopping", error=repr(e), traceback=traceback.format_exc())
            raise
        sdnotify.notify("STOPPING=1", "STATUS=answering what is in flight, then a checkpoint")
        drain(gw, DRAIN_SECONDS)
        settle(gw, links, DRAIN_SECONDS)
        try:
            gw.checkpoints.write(clean=True, durable=True)
        except StoreError as e:
            logs.error("last checkpoint not written; the next start reads more", error=str(e))
        late = specialized_since(warmed)
        if late:
            logs.warning("compiled while serving: the warm-up misses these", kernels=late)
        logs.info(
            "stopped",
            unanswered=len(gw.inflight),
            unroutable=gw.replies.unroutable,
            dropped=gw.replies.dropped,
        )
    finally:
        counters.unlink()
        router.close()
        pub.close()
        zap.close()
        conns.close()
        for link in links:
            link.close()
        store.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
