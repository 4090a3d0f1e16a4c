"""ER7 reading (separators, escapes, line ends, character sets) and ACK building, without sockets."""

from __future__ import annotations

import pytest

from appliance.config import HL7Config
from hl7.ack import AckError, build_ack
from hl7.er7 import ER7Error, Separators, decode, parse, resolve_charset, unescape
from hl7.mapping import MappingError, cnn, map_order, xcn, xpn

SEPS = Separators()


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("CT Head \\T\\ Neck", "CT Head & Neck"),
        ("a\\F\\b\\S\\c\\R\\d\\E\\e", "a|b^c~d\\e"),
        ("Asthma\\.br\\Diabetes", "Asthma\r\nDiabetes"),
        ("M\\X FC\\ller", "M\\X FC\\ller"),  # not hex: kept as sent
        ("M\\XFC\\ller", "Müller"),
        ("\\H\\bold\\N\\", "bold"),
        ("unterminated \\F", "unterminated \\F"),
        ("\\Z123\\x", "x"),
    ],
)
def test_unescape(raw: str, text: str) -> None:
    assert unescape(raw, SEPS) == text


def test_segments_fields_and_null() -> None:
    msg = parse('MSH|^~\\&|RIS|HOSP|||20260905||ORM^O01|X1|P|2.3.1\nPID|||ID1^^^HOSP~ID2^^^OTHER||Doe^J|""\r\nZZZ|a')
    assert [s.name for s in msg.segments] == ["MSH", "PID", "ZZZ"]
    assert msg.message_type == ("ORM", "O01") and msg.control_id == "X1" and msg.version == "2.3.1"
    pid = msg.first("PID")
    assert pid is not None
    assert (pid.value(3), pid.value(3, 4), pid.value(3, 1, 1, 1), pid.value(3, 4, 1, 1)) == (
        "ID1",
        "HOSP",
        "ID2",
        "OTHER",
    )
    assert pid.value(5, 2) == "J" and pid.value(5, 3) is None
    assert pid.value(6) == ""  # HL7 null
    assert pid.value(7) is None  # not sent
    assert msg.msh.value(1) == "|" and msg.msh.value(2) == "^~\\&"


def test_other_separators() -> None:
    msg = parse("MSH#$%*!#RIS#HOSP#####ORM$O01#X2#P#2.5\rPID###A1$$$H1##Doe$Jo!hn%Roe*S*x")
    pid = msg.first("PID")
    assert pid is not None and msg.message_type == ("ORM", "O01")
    assert (pid.value(3), pid.value(3, 4), pid.value(5, 2), pid.value(5, 2, 2)) == ("A1", "H1", "Jo", "hn")
    assert pid.value(5, 1, 1, 1) == "Roe$x"


@pytest.mark.parametrize("text", ["", "hello", "MSH", "PID|1|2", "MSHabc", "MSH|^~\\&|A|B\rP!D|x"])
def test_not_hl7(text: str) -> None:
    with pytest.raises(ER7Error):
        parse(text)


def test_charsets() -> None:
    assert resolve_charset("8859/1").dicom == "ISO_IR 100"
    assert resolve_charset("unicode utf-8").codec == "utf-8"
    assert resolve_charset("cp1252").dicom == "ISO_IR 192"
    with pytest.raises(ER7Error) as info:
        resolve_charset("EBCDIC-XYZ")
    assert info.value.code == 103
    raw = "MSH|^~\\&|A|B|C|D|20260905||ADT^A08|1|P|2.5||||||8859/7\rPID|||1||Παπάς".encode("iso8859-7")
    text, cs = decode(raw, "8859/1")
    assert "Παπάς" in text and cs.dicom == "ISO_IR 126"
    text, cs = decode("MSH|^~\\&|A\rPID|||1||Müller".encode("cp1252"), "cp1252")
    assert "Müller" in text
    with pytest.raises(ER7Error) as bad:
        decode("MSH|^~\\&|A|B|C|D|1||ADT^A08|1|P|2.5||||||UNICODE UTF-8\rPID|||\xff".encode("latin-1"), "8859/1")
    assert bad.value.code == 102


def test_names() -> None:
    seg = parse(
        "MSH|^~\\&|A||||||ADT^A08\rPID|||1||Doe^Jane^Marie^Jr^Dr^PhD|\rPV1||||||||1234^Curie^Marie^^^Prof|\r"
        "OBR" + "|" * 34 + "77&Tech&Tom"
    ).segments
    assert xpn(seg[1], 5) == "Doe^Jane^Marie^Dr^Jr PhD"
    assert xcn(seg[2], 8) == "Curie^Marie^^Prof"
    assert cnn(seg[3], 34) == "Tech^Tom"
    assert xpn(seg[1], 6) is None


def test_bad_start_time_names_the_field() -> None:
    msg = parse(
        "MSH|^~\\&|RIS|H|||1||ORM^O01|1|P|2.3.1\rPID|||P1||Doe\rORC|NW||||SC||^^^20260905T1100\r"
        "OBR|||||||||||||||||A|R|S||||CT\rZDS|1.2.3"
    )
    with pytest.raises(MappingError) as info:
        map_order(msg, HL7Config(station_aets={"CT": "CT1"}))
    assert (info.value.code, info.value.location) == (102, "ORC^1^7^1^4")


def test_ack_shapes() -> None:
    msg = parse("MSH|^~\\&|RIS|HOSP|PACS|SITE|20260905||ORM^O01|C1|P|2.5.1|||AL|NE||8859/1\r")
    ack = build_ack("AE", msg, "", "", AckError(101, "PID^1^3^1^1", "Patient ID | missing"))
    lines = ack.split("\r")
    assert lines[0].startswith("MSH|^~\\&|PACS|SITE|RIS|HOSP|")
    assert lines[0].endswith("|ACK^O01^ACK|" + lines[0].split("|")[9] + "|P|2.5.1||||||8859/1")
    assert lines[1] == "MSA|AE|C1|Patient ID \\F\\ missing"
    assert lines[2] == "ERR||PID^1^3^1^1|101^Required field missing^HL70357|E||||Patient ID \\F\\ missing"
    assert build_ack("AA", msg).split("\r")[1] == "MSA|AA|C1"
