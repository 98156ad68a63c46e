"""Compile (or load from Numba's cache) every ring operation before it is needed.

A process that waits for its first record to compile the ring's Numba code pays
seconds on a cold cache, holding the GIL meanwhile (its other threads, such as
the gateway's ZAP handler, stall too). ``warm_up`` runs each operation once on a
throwaway ring in a namespace of its own, then removes it.

That namespace is ``warm-<process token>`` (``shm.proc``): a process killed while
warming up cannot remove its ring, and the token says, even after its pid is
reused, that the process is gone. Every warm-up first sweeps the rings of gone
processes, so the next start of a shard or the gateway removes what a killed one
left.
"""

import time

import numpy as np

from shm import proc
from shm.consumer import Consumer
from shm.names import list_namespaces, unlink_namespace
from shm.producer import Producer
from shm.ring import create_ring

_DTYPE = np.dtype([("a", "<i8"), ("_pad", "u1", (56,))])
PREFIX = "warm-"


def sweep() -> list[str]:
    """Remove the warm-up rings of processes that are gone; returns the paths removed."""
    removed = []
    for ns in list_namespaces(PREFIX):
        token = ns[len(PREFIX) :]
        if token.isdigit() and not proc.token_alive(int(token)):
            removed += unlink_namespace(ns)
    return removed


def warm_up() -> float:
    """Run every ring operation once; returns the seconds it took."""
    t0 = time.perf_counter()
    sweep()
    ns = f"{PREFIX}{proc.token()}"
    try:
        create_ring(ns, "w", _DTYPE, 4)
        with Producer(ns, "w", _DTYPE) as p, Consumer(ns, "w", _DTYPE) as c:
            p.write(np.zeros(2, _DTYPE))  # push
            view = p.claim(1)  # write_span, publish
            p.publish(len(view))
            c.wait(timeout=1.0)  # spin
            c.readable()
            c.release(len(c.peek(1)))  # read_span, release
            c.read(4)  # pull
            p.wait_writable(1, timeout=1.0)
            for end in (c, p):  # the sleeping handshake, without sleeping
                end.prepare_sleep()
                end.finish_sleep()
            with p.unasked():  # a shard's own commands; a gateway leaving
                pass
            c.leave(timeout=0.0)
    finally:
        unlink_namespace(ns)
    return time.perf_counter() - t0
