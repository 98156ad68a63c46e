"""A journal writer or reader in its own process, for the cross-process journal tests.

    journal_worker.py write PATH STREAM.npz [--durability M] [--map-size B]
                      [--max-map-size B] [--step] [--fsize-limit B] [--merge-rows N]
    journal_worker.py read PATH STREAM.npz

``write`` journals the saved batches in order, each with the position
``{"input": batches written}``. Without ``--step`` it writes them
all, printing ``ack LAST_SEQ`` after each commit returns; with ``--step`` it
reads a count per stdin line and writes that many before printing ``ack``. At
the end it prints ``done MAP_GROWS``. ``--fsize-limit`` caps the size of files
it writes (RLIMIT_FSIZE, SIGXFSZ ignored), a full disk in miniature: the
JournalFull it ends with is printed as ``full MESSAGE`` and the exit code is 3.

``read`` opens the journal read-only and answers each stdin line: ``check``
verifies that the journal holds a whole prefix of the batches and prints
``seen LAST_SEQ``; ``follow SEQ`` keeps checking until it sees SEQ and prints
``followed CHECKS``. Any inconsistency raises (a traceback, a non-zero exit).
"""

import argparse
import resource
import signal
import sys

from journal_stream import assert_prefix, load

from exchange.journal import Journal, JournalFull, JournalReader


def say(*words) -> None:
    # one write, so a SIGKILL cannot cut a line (print writes word by word
    # when stdout is unbuffered)
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def write(args, batches) -> int:
    if args.fsize_limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize_limit, args.fsize_limit))
    with Journal(
        args.path,
        durability=args.durability,
        map_size=args.map_size,
        max_map_size=args.max_map_size,
        **({"merge_rows": args.merge_rows} if args.merge_rows else {}),
    ) as j:
        todo = enumerate(batches)
        try:
            if args.step:
                for line in sys.stdin:
                    for _, (k, (c, e)) in zip(range(int(line)), todo, strict=False):
                        j.write_batch(c, e, consumed={"input": k + 1})
                    say("ack", j.last_seq)
            else:
                for k, (c, e) in todo:
                    j.write_batch(c, e, consumed={"input": k + 1})
                    say("ack", j.last_seq)
        except JournalFull as e:
            say("full", e)
            return 3
        say("done", j.stats().map_grows)
        # wait for stdin to close: a test too slow to kill it mid-stream
        # still finds it alive
        sys.stdin.read()
    return 0


def read(args, batches) -> int:
    with JournalReader(args.path) as j:
        for line in sys.stdin:
            word, *rest = line.split()
            if word == "check":
                say("seen", assert_prefix(j, batches))
            elif word == "follow":
                checks = 1
                while assert_prefix(j, batches) < int(rest[0]):
                    checks += 1
                say("followed", checks)
            else:
                raise ValueError(f"unknown reader command {line!r}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=("write", "read"))
    ap.add_argument("path")
    ap.add_argument("stream")
    ap.add_argument("--durability", default="fsync")
    ap.add_argument("--map-size", type=int, default=1 << 20)
    ap.add_argument("--max-map-size", type=int, default=1 << 30)
    ap.add_argument("--step", action="store_true")
    ap.add_argument("--fsize-limit", type=int, default=0)
    ap.add_argument("--merge-rows", type=int, help="fold the log this often (rows + entries)")
    args = ap.parse_args()
    batches = load(args.stream)
    return write(args, batches) if args.role == "write" else read(args, batches)


if __name__ == "__main__":
    sys.exit(main())
