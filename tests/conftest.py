"""Fixtures shared by the tests: every book implementation behind one interface, a daemon."""

import importlib.util

import pytest

from exchange.reference import ReferenceBook


def kernel_book_class():
    """exchange.book.Book, or None while that module does not exist yet.

    Only a missing module counts as absent: if it exists but fails to import,
    the error surfaces in the tests.
    """
    if importlib.util.find_spec("exchange.book") is None:
        return None
    from exchange.book import Book

    return Book


@pytest.fixture(params=["reference", "kernel"])
def book_cls(request):
    """Each book implementation in turn; the kernel's tests skip until it lands."""
    if request.param == "reference":
        return ReferenceBook
    cls = kernel_book_class()
    if cls is None:
        pytest.skip("exchange/book.py does not exist yet")
    return cls


@pytest.fixture
def book_classes():
    """All implementations present, the reference first (the one the others must match)."""
    cls = kernel_book_class()
    return [ReferenceBook] if cls is None else [ReferenceBook, cls]


@pytest.fixture(scope="session", autouse=True)
def compiled_once():
    """Compile every Numba path once, in this process, before any test starts a shard
    or a gateway: on a cold cache (a fresh clone, CI) the processes then load the
    compiled code instead of each spending tens of seconds compiling it while a test's
    clock runs."""
    from exchange.engine import warm_up
    from shm.warmup import warm_up as warm_up_rings

    warm_up()
    warm_up_rings()


@pytest.fixture
def daemon(tmp_path, request):
    """A real daemon on its own config (``daemon_harness.Daemon``), not yet started; killed
    with everything it started, and its shared memory removed, whatever the test did. A
    test module that needs another config defines ``configure(config) -> config``."""
    from daemon_harness import Daemon, reconfigured

    d = Daemon(tmp_path)
    configure = getattr(request.module, "configure", None)
    if configure is not None:
        reconfigured(d, configure)
    try:
        yield d
    finally:
        d.close()
