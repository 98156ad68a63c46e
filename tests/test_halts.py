"""The operators' halt requests (``exchange.halts``): files a shard reads, never its state."""

import pytest

from exchange import halts
from exchange.halts import HaltError


def test_a_request_is_a_file_of_one_line_taken_back_by_a_resume(tmp_path):
    where = tmp_path / "halts"
    assert halts.requested(where) == {}  # no directory yet: nothing asked
    path = halts.request_halt(where, "ACME", "exch halt by ops: news")
    assert path == where / "ACME"
    [(sym, note)] = halts.requested(where).items()
    assert sym == "ACME" and note.endswith(" exch halt by ops: news")
    halts.request_halt(where, "ACME", "again")  # asking twice is asking once
    assert list(halts.requested(where)) == ["ACME"]
    assert halts.requested(where)["ACME"].endswith(" again")
    halts.request_resume(where, "ACME")
    assert halts.requested(where) == {}
    with pytest.raises(HaltError, match="ACME has no halt request"):
        halts.request_resume(where, "ACME")


def test_hidden_files_are_not_requests_and_odd_names_are_refused(tmp_path):
    where = tmp_path / "halts"
    halts.request_halt(where, "BTC-USD", "x")
    (where / ".ACME.tmp").write_text("half written")
    assert list(halts.requested(where)) == ["BTC-USD"]
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(HaltError, match="cannot name"):
            halts.request_halt(where, bad, "x")
