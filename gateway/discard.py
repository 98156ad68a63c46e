"""Reading off the frames of a refused message inside libzmq, and giving the heap back.

A request is one frame; a message of more is refused ``invalid``, but every
frame of it must be read before the ROUTER gives the next message. libzmq
delivers a message only once its last frame is in, and holds all of it until
then (about 64 bytes a small frame). From Python each frame costs a ``recv``
and a Frame object, ~0.5 µs: a message of 3,000,000 one-byte frames held the
gateway for 1.8 s. ``discard`` calls libzmq's ``zmq_msg_recv`` in a compiled
loop (~30 ns a frame, one ``zmq_msg_t`` reused), at most ``budget`` frames a
call, so the gateway spreads a huge message over turns that still drain
events and send replies.

The pipe's memory is freed as the frames are read, but glibc keeps freed small
blocks in its heaps: after three such messages the gateway kept 400 MB it no
longer used. ``give_back_heap`` returns the free pages to the system.
"""

import ctypes

import numba
import numpy as np
import zmq
from numba import types
from zmq.backend.cython import _zmq

_libzmq = ctypes.CDLL(_zmq.__file__)  # pyzmq's extension, linked with its libzmq


def _function(name: str, args: list, result=ctypes.c_int):
    f = getattr(_libzmq, name)
    f.argtypes = args
    f.restype = result
    return f


_msg_init = _function("zmq_msg_init", [ctypes.c_void_p])
_msg_close = _function("zmq_msg_close", [ctypes.c_void_p])
_msg_recv = _function("zmq_msg_recv", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int])
_msg_more = _function("zmq_msg_more", [ctypes.c_void_p])
_errno = _function("zmq_errno", [])
_DONTWAIT = int(zmq.DONTWAIT)
MSG_WORDS = 8  # a zmq_msg_t is 64 bytes, aligned for pointers
SIGNATURE = (types.Array(types.int64, 1, "C"), types.int64, types.int64)

_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; others differ


@numba.njit(nogil=True)  # not cached: the libzmq functions' addresses differ per process
def _discard(msg, socket, budget):
    """(frames read, 1 if the last one ended the message, 0 if not, -1 if a recv failed)."""
    p = msg.ctypes.data
    n = 0
    while n < budget:
        if _msg_recv(p, socket, _DONTWAIT) < 0:
            return n, -1
        n += 1
        if _msg_more(p) == 0:
            return n, 1
    return n, 0


def discard(s: zmq.Socket, budget: int) -> tuple[int, bool]:
    """Read up to ``budget`` frames of the message ``s`` is in the middle of; returns how
    many, and whether the message is over."""
    msg = np.zeros(MSG_WORDS, np.int64)
    _msg_init(msg.ctypes.data)
    try:
        n, status = _discard(msg, s.underlying, budget)
        if status < 0:
            raise zmq.ZMQError(_errno())
    finally:
        _msg_close(msg.ctypes.data)  # the last frame read: up to the receive limit
    return n, status == 1


def compile_discard() -> None:
    """For the warm-up: ``_discard``'s one signature, without a socket to run it on."""
    _discard.compile(SIGNATURE)


def give_back_heap() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)
