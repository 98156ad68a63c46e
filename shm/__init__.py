"""Shared-memory rings, doorbells and counters between the exchange's processes.

Rings: ``shm.ring`` (create, adopt, inspect, list, unlink), ``shm.producer`` and
``shm.consumer`` (the two ends, from Python), ``shm.ring_ops`` (the same
operations as ``@njit`` functions, and the header layout). Counters:
``shm.counters`` (a process's block, written on its hot path) and
``shm.counters_reader`` (any process reads them). The rest are their parts.
"""
