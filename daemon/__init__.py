"""The daemon: the processes' orchestration above the shard (``exchange``) and the
gateway (``gateway``): the supervisor, the roles of ``exchanged run``, ``exchanged
status``, the metrics endpoint and the ``exchanged`` command line."""
