"""How a benchmark prints its result: one JSON line (``--json``), or aligned lines for people."""

import json


def emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:>{width}}: {v}")
