"""Where the segments of a namespace live: names checked, paths derived, listed, removed.

Every segment is a file ``exch.<namespace>.<name>.<suffix>`` in ``/dev/shm`` (or
``$EXCH_SHM_DIR``), so a supervisor can create and unlink the whole set of a
deployment by its namespace and tests can run side by side in unique namespaces.
"""

import os
import re

PREFIX = "exch"
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def shm_dir() -> str:
    return os.environ.get("EXCH_SHM_DIR", "/dev/shm")


def check_name(what: str, value: str) -> str:
    """Return ``value`` if it is a valid namespace or segment name, else raise ValueError."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1 to 64 characters among letters, digits, '_' and '-'"
        )
    return value


def segment_path(namespace: str, name: str, suffix: str) -> str:
    check_name("namespace", namespace)
    check_name("name", name)
    return os.path.join(shm_dir(), f"{PREFIX}.{namespace}.{name}.{suffix}")


def list_names(namespace: str, suffix: str) -> list[str]:
    """The names of the segments of ``namespace`` whose file ends with ``.suffix``, sorted."""
    check_name("namespace", namespace)
    head, tail = f"{PREFIX}.{namespace}.", f".{suffix}"
    names = []
    for entry in os.listdir(shm_dir()):
        if entry.startswith(head) and entry.endswith(tail):
            name = entry[len(head) : -len(tail)]
            if _NAME_RE.fullmatch(name):
                names.append(name)
    return sorted(names)


def list_namespaces(prefix: str) -> set[str]:
    """The namespaces starting with ``prefix`` that have a file in the shm directory."""
    head = f"{PREFIX}.{prefix}"
    return {
        entry[len(PREFIX) + 1 :].split(".", 1)[0]
        for entry in os.listdir(shm_dir())
        if entry.startswith(head)
    }


def unlink_namespace(namespace: str) -> list[str]:
    """Remove every file of ``namespace`` (segments, doorbells, leftovers); return their paths."""
    check_name("namespace", namespace)
    head = f"{PREFIX}.{namespace}."
    removed = []
    for entry in os.listdir(shm_dir()):
        if entry.startswith(head):
            path = os.path.join(shm_dir(), entry)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed
