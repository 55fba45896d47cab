"""Errors a user can act on, through the package: the text of each DynembError names
the problem (row and column, limit, rule, optimizer), word for word."""

import errno

import numpy as np
import pytest

import dynemb

DIM = 4


def _raises(fn, err, text):
    with pytest.raises(dynemb.DynembError) as ei:
        fn()
    assert ei.value.errno == err
    assert ei.value.strerror == text


def test_nonfinite_values_and_gradients_name_row_and_column(client, tname):
    t = client.open(tname, DIM, init="zeros", optimizer="sgd", lr=0.5)
    v = np.ones((3, DIM), np.float32)
    v[1, 2] = np.nan
    _raises(lambda: t.update([1, 2, 3], v), errno.EINVAL,
            "invalid argument: non-finite value in row 1 (column 2: nan): nothing was applied")
    v[1, 2] = 1
    v[2, 0] = np.inf
    _raises(lambda: t.apply_gradients([1, 2, 3], v), errno.EINVAL,
            "invalid argument: non-finite gradient in row 2 (column 0: inf): nothing was "
            "applied")
    _raises(lambda: t.apply_gradients([1], np.ones((1, DIM), np.float32), lr=float("inf")),
            errno.EINVAL, "invalid argument: non-finite learning rate inf: give a finite "
            "lr > 0, or 0 for the table's")
    _, st = t.lookup([1, 2, 3], readonly=True, with_status=True)
    assert list(st) == [dynemb.ST_MISSING] * 3, "a rejected call applies nothing"


def test_string_key_over_the_limit(client, tname):
    t = client.open(tname, DIM, init="zeros", keys="str")
    _raises(lambda: t.lookup(["ok", "k" * 65536]), errno.EINVAL,
            "invalid argument: string key 1 is 65536 bytes: a string key is at most 65535 "
            "bytes")
    t.lookup(["ok", "k" * 65535])


def test_reopen_with_another_optimizer_names_both(client, tname):
    client.open(tname, DIM, init="zeros", optimizer="adagrad", lr=0.1)
    _raises(lambda: client.open(tname, DIM, init="zeros", optimizer="sgd", lr=0.1),
            errno.EEXIST, "a table of that name exists with a different config: table "
            f"'{tname}' exists with another config: asked optimizer.kind sgd, not adagrad")
    _raises(lambda: client.open(tname, DIM, init="zeros"), errno.EEXIST,
            "a table of that name exists with a different config: table "
            f"'{tname}' exists with another config: asked optimizer.kind none, not adagrad")
    _raises(lambda: client.open(tname, DIM, init="zeros", optimizer="adagrad", lr=0.01),
            errno.EEXIST, "a table of that name exists with a different config: table "
            f"'{tname}' exists with another config: asked optimizer.lr 0.01, not 0.1")


def test_bad_table_name_says_the_rule(client):
    rule = "a table name is 1 to 63 bytes, without control characters"
    _raises(lambda: client.open("bad\tname", DIM), errno.EINVAL,
            "invalid argument: table name has a control character at byte 3: " + rule)
    _raises(lambda: client.open("n" * 64, DIM), errno.EINVAL,
            "invalid argument: table name too long: " + rule)
