"""The wire module: encoding leaves out absent optional fields; ids follow section 2."""

from __future__ import annotations

import orjson
import pytest

from hub import protocol
from hub.errors import BadRequest, InvalidClientId, InvalidSessionId
from hub.protocol import Ack, Counts, Ping, SetSession, Sync


def test_encode_orders_type_first_and_drops_none() -> None:
    assert protocol.encode(Counts(3, {"S1": 0}, None, {"S1": 0})) == (
        b'{"type":"counts","seq":3,"counts":{"S1":0},"users":{"S1":0}}'
    )
    assert orjson.loads(protocol.encode(Counts(4, {}, 2, {}, 1))) == {
        "type": "counts",
        "seq": 4,
        "counts": {},
        "online": 2,
        "users": {},
        "online_users": 1,
    }
    assert protocol.encode(Ack("r", 1)) == b'{"type":"ack","ref":"r","seq":1}'


def test_parse_commands() -> None:
    assert protocol.parse('{"type":"set_session","session_id":null}') == SetSession("")
    assert protocol.parse('{"type":"set_session","session_id":"S","ref":-3}') == SetSession("S", -3)
    assert protocol.parse('{"type":"sync"}') == Sync()
    assert protocol.parse(b'{"type":"ping","ref":"p"}') == Ping("p")


def test_client_ids() -> None:
    assert protocol.check_client_id("3F2504E0-4F89-11D3-9A0C-0305E82C3301") == (
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    )
    for bad in (
        None,
        5,
        "",
        "3f2504e04f8911d39a0c0305e82c3301",
        "{3f2504e0-4f89-11d3-9a0c-0305e82c3301}",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301\n",
    ):
        with pytest.raises(InvalidClientId):
            protocol.check_client_id(bad)


def test_session_ids() -> None:
    assert protocol.check_session_id("é" * 128) == "é" * 128
    with pytest.raises(InvalidSessionId):
        protocol.check_session_id("\x7f")
    with pytest.raises(InvalidSessionId):
        protocol.check_session_id("a\u0085")  # C1 control
    with pytest.raises(BadRequest):
        protocol.check_session_id(1)


def test_control_characters_are_exactly_unicode_category_cc() -> None:
    import unicodedata

    for code in range(0x110000):
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue  # lone surrogates never reach here: the JSON parser refuses them
        refused = unicodedata.category(ch) == "Cc"
        try:
            protocol.check_session_id(ch)
            assert not refused, hex(code)
        except InvalidSessionId:
            assert refused, hex(code)
