"""Atomic operations on int64 words of a numpy array, as Numba intrinsics.

Plain numpy or Numba stores give no ordering guarantee once compiled: LLVM may
reorder a record store after the cursor store that publishes it. These emit
LLVM atomics instead, which compile to single aligned 8-byte instructions with
the requested ordering (on x86-64: plain loads/stores for acquire/release, a
locked instruction for read-modify-write and seq_cst fences).

Every function takes a 1-d C-contiguous int64 array and a word index; the index
is not bounds-checked (callers use layout constants or validated slots). They
work in ``@njit`` code; Python calls them through the small ``@njit`` wrappers
at the end of this module.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _is_word_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1


def _word_ptr(context, builder, sig, args):
    arrty = sig.args[0]
    ary = context.make_array(arrty)(context, builder, args[0])
    idx = context.cast(builder, args[1], sig.args[1], types.intp)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx], wraparound=False)


def _value(context, builder, sig, args):
    return context.cast(builder, args[2], sig.args[2], types.int64)


@intrinsic
def load_acquire(typingctx, arr, idx):
    """arr[idx], and no later load or store moves before it."""
    if not (_is_word_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_word_ptr(context, builder, sig, args), "acquire", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def store_release(typingctx, arr, idx, value):
    """arr[idx] = value, after every earlier load and store is visible."""
    if not (_is_word_array(arr) and isinstance(idx, types.Integer)):
        return None
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig, args)
        builder.store_atomic(_value(context, builder, sig, args), ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(arr, idx, value), codegen


@intrinsic
def fetch_add(typingctx, arr, idx, value):
    """arr[idx] += value as one indivisible step; returns the old value (no ordering)."""
    if not (_is_word_array(arr) and isinstance(idx, types.Integer)):
        return None
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig, args)
        return builder.atomic_rmw("add", ptr, _value(context, builder, sig, args), "monotonic")

    return types.int64(arr, idx, value), codegen


@intrinsic
def exchange(typingctx, arr, idx, value):
    """Swap arr[idx] with value, sequentially consistent; returns the old value."""
    if not (_is_word_array(arr) and isinstance(idx, types.Integer)):
        return None
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig, args)
        return builder.atomic_rmw("xchg", ptr, _value(context, builder, sig, args), "seq_cst")

    return types.int64(arr, idx, value), codegen


@intrinsic
def compare_exchange(typingctx, arr, idx, expected, value):
    """If arr[idx] == expected, set it to value (seq_cst); returns the value found."""
    if not (_is_word_array(arr) and isinstance(idx, types.Integer)):
        return None
    if not (isinstance(expected, types.Integer) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _word_ptr(context, builder, sig, args)
        exp = context.cast(builder, args[2], sig.args[2], types.int64)
        new = context.cast(builder, args[3], sig.args[3], types.int64)
        pair = builder.cmpxchg(ptr, exp, new, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return types.int64(arr, idx, expected, value), codegen


@intrinsic
def fence(typingctx):
    """A full (seq_cst) fence: no store before it is reordered with a load after it."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def cpu_relax(typingctx):
    """The x86 PAUSE hint for spin loops: saves power and frees the sibling hyperthread."""

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.call(
            cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), []
        )
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def load_word(words, index):
    return load_acquire(words, index)


@njit(cache=True, nogil=True)
def store_word(words, index, value):
    store_release(words, index, value)


@njit(cache=True, nogil=True)
def swap_word(words, index, expected, value):
    """Compare-and-swap; returns the value found (== expected when it swapped)."""
    return compare_exchange(words, index, expected, value)


@njit(cache=True, nogil=True)
def snapshot(words):
    """A copy of ``words`` made of single atomic 8-byte loads (no torn word)."""
    out = np.empty(words.shape[0], np.int64)
    for i in range(words.shape[0]):
        out[i] = load_acquire(words, i)
    return out


@njit(cache=True, nogil=True)
def exchange_word(words, index, value):
    """Swap in ``value``, sequentially consistent (a full barrier); returns the old value."""
    return exchange(words, index, value)
