"""What a process's exit code means; the systemd units' ``RestartPreventExitStatus`` lists
every code that a restart cannot fix.

0  stopped cleanly.
2  bad input: the config, the keys directory, an endpoint, a tool's arguments.
3  the journal is full (the disk, or the map at its maximum): intake stopped.
4  the journal cannot be trusted: gone where one existed, damaged (a record, a meta
   page, a short file), made by other code, or not agreeing with itself on replay.
   One line on stderr names the file and the reason.
"""

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_JOURNAL_FULL = 3
EXIT_UNTRUSTED = 4
