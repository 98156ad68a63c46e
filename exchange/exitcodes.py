"""What a process's exit code means; the systemd units' ``RestartPreventExitStatus`` lists
every code that a restart cannot fix.

0  stopped cleanly.
1  a failure a restart may cure (the journal still held by the previous process, say).
2  bad input: the config, the keys directory, an endpoint, a tool's arguments.
3  the journal is full (the disk, or the map at its maximum): intake stopped.
4  the journal cannot be trusted: gone where one existed, another journal than the
   recorded one, damaged (a record, a meta page, a short file), of another layout,
   or not agreeing with itself on replay. One log line names the file and the reason.
141  (a command's output) its reader went away, as with ``| head``: as a process killed
   by SIGPIPE, without a traceback.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_JOURNAL_FULL = 3
EXIT_UNTRUSTED = 4
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE's

# what the supervisor, like the units' RestartPreventExitStatus, does not restart
NO_RESTART = (EXIT_USAGE, EXIT_JOURNAL_FULL, EXIT_UNTRUSTED)
