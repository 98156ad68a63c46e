"""Every long-running process (supervisor, rings' owner, shard, gateway) raises its
soft limit of open files to the hard limit first thing.

Each client connection holds one of the gateway's descriptors. ``make run``
from a shell inherits the shell's soft limit, often 1,024, while the hard limit
is far higher (systemd gives services 524,288): at 1,024, about a thousand
connections left the gateway unable to open a key file (EMFILE). Only the
hard limit needs privileges to raise; the soft one is the process's to set.
"""

import resource

from exchange import logs


def raise_open_file_limit() -> int:
    """Soft RLIMIT_NOFILE := hard, logged; returns the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        logs.info("open-file limit", limit=soft)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:  # e.g. a hard limit of "unlimited" above fs.nr_open
        logs.warning("open-file limit not raised", limit=soft, hard=hard, error=str(e))
        return soft
    logs.info("open-file limit raised", limit=hard, was=soft)
    return hard
