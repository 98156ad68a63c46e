"""``exch keys``: it makes the key files the gateway reads; bad input changes nothing."""

import json
import os

import pytest
import zmq

from gateway.keys import client_table, load_secret_certificate, load_server_keys
from tools import cli


def keys(tmp_path, *argv) -> int:
    return cli.main(["keys", *argv, "--keys-dir", str(tmp_path / "keys")])


def out_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_server_pair_create_show_rotate(tmp_path, capsys):
    assert keys(tmp_path, "server") == 2
    assert "no server key pair" in capsys.readouterr().err
    assert keys(tmp_path, "server", "--create", "--json") == 0
    first = out_json(capsys)["server"]
    assert load_server_keys(tmp_path / "keys")[0].decode() == first
    assert keys(tmp_path, "server", "--create") == 0  # there is one: shown, not replaced
    assert capsys.readouterr().out.strip() == first
    assert keys(tmp_path, "server", "--rotate", "--json") == 0
    doc = out_json(capsys)
    assert doc["server"] != first
    assert load_server_keys(tmp_path / "keys")[0].decode() == doc["server"]
    retired = load_server_keys(doc["retired"])[0].decode()
    assert retired == first


def test_client_create_list_register_revoke(tmp_path, capsys):
    secret = tmp_path / "bot7.key_secret"
    assert keys(tmp_path, "create", "7", "--out", str(secret), "--json") == 0
    made = out_json(capsys)
    public, _ = load_secret_certificate(secret)
    assert made["public_key"] == public.decode()
    assert os.stat(secret).st_mode & 0o077 == 0  # the secret is the owner's only
    assert client_table(tmp_path / "keys") == {public: 7}

    other_public, _ = zmq.curve_keypair()
    assert keys(tmp_path, "register", "8", other_public.decode()) == 0
    capsys.readouterr()
    assert keys(tmp_path, "list", "--json") == 0
    listed = out_json(capsys)["clients"]
    assert listed == [
        {"client": 7, "public_key": public.decode()},
        {"client": 8, "public_key": other_public.decode()},
    ]

    assert keys(tmp_path, "revoke", "7") == 0
    capsys.readouterr()
    assert client_table(tmp_path / "keys") == {other_public: 8}
    assert keys(tmp_path, "list") == 0
    text = capsys.readouterr().out
    assert "1 registered client(s)" in text and other_public.decode() in text


def test_bad_input_is_one_error_and_changes_nothing(tmp_path, capsys):
    secret = tmp_path / "bot7.key_secret"
    assert keys(tmp_path, "create", "7", "--out", str(secret)) == 0
    capsys.readouterr()
    before = client_table(tmp_path / "keys")
    cases = [
        (("create", "8", "--out", str(secret)), "exists already"),  # never overwrite a secret
        (("create", "8", "--out", str(tmp_path / "nowhere" / "x")), "is not a directory"),
        (("create", "7", "--out", str(tmp_path / "again")), "registered already"),
        (("register", "9", "not-a-key"), "40 Z85 characters"),
        (("register", "9", next(iter(before)).decode()), "registered already"),
        (("revoke", "99"), "not registered"),
    ]
    for argv, message in cases:
        assert keys(tmp_path, *argv) == 2, argv
        assert message in capsys.readouterr().err, argv
        assert client_table(tmp_path / "keys") == before
    assert not (tmp_path / "again").exists()
    for bad in ("0", "4294967296", "x"):
        with pytest.raises(SystemExit) as usage:  # argparse's usage error
            keys(tmp_path, "revoke", bad)
        assert usage.value.code == 2
        assert "is not a client id" in capsys.readouterr().err
