"""``exch top``'s frame: each column shows the metric a process's block has, '-' otherwise."""

from tools.top import frame

DOC = {
    "running": False,
    "namespace": "prod",
    "supervisor": None,
    "processes": {
        "shard-s0": {
            "pid": 101,
            "alive": True,
            "commands": 500,
            "commands_per_sec": 250,
            "events_per_sec": 700,
            "last_seq": 500,
            "request_depth": 3,
            "commit_us_p50": 150,
            "commit_us_p99": 1800,
        },
        "gateway": {
            "pid": 102,
            "alive": False,
            "orders_per_sec": 260,
            "fills_per_sec": 90,
            "clients": 4,
            "rejects.invalid": 7,
            "rejects.invalid_per_sec": 1,
            "rejects.rate_limited": 2,
        },
    },
    "rings": {"s0-req": {"depth": 3, "capacity": 1024, "published": 503}},
}


def test_columns_take_what_each_block_has():
    lines = frame(DOC, now=0).splitlines()
    assert "no supervisor" in lines[0] and "prod" in lines[0]
    header = lines[2].split()
    assert header[:3] == ["process", "pid", "state"] and "orders/s" in header
    gateway = next(line for line in lines if line.startswith("gateway")).split()
    shard = next(line for line in lines if line.startswith("shard-s0")).split()
    # orders/s, fills/s, events/s, batches/s, last seq, req depth, commit, clients
    assert gateway[1:] == ["102", "gone", "260", "90", "-", "-", "-", "-", "-", "4"]
    assert shard[1:] == ["101", "up", "250", "-", "700", "-", "500", "3", "150/1800", "-"]
    ring = next(line for line in lines if line.startswith("s0-req")).split()
    assert ring == ["s0-req", "3", "1024", "503"]
    assert lines[-1] == "rejects: invalid 7, rate_limited 2"


def test_no_process_says_so():
    doc = {**DOC, "processes": {}, "rings": {}}
    assert "no process has a counter block" in frame(doc, now=0)
