"""USB presence probe, with pyusb faked at its edge (usb.core.find) and ids checked against usb.ids."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import usb.core

from robots import detect

# A small usb.ids in the real format: vendors, tab-indented products, then the class lists.
USB_IDS = """\
# comment
04b8  Seiko Epson Corp.
\t0007  Printer
\t0402  PhotoPC 850z
\t1143  L3150 Series
0cc3  Rimage Corp.
C 00  (Defined at Interface level)
\t01  Audio
"""


class FakeDevice(SimpleNamespace):
    pass


class Locked:
    """A device whose strings need permissions we do not have."""

    idVendor = 0x04B8
    idProduct = 0x0007
    bus = 1
    address = 9

    @property
    def product(self) -> str:
        raise ValueError("The device has no langid (permission?)")

    manufacturer = product
    serial_number = product


def _device(vid: int, pid: int, product: str | None, address: int) -> FakeDevice:
    return FakeDevice(
        idVendor=vid, idProduct=pid, product=product, manufacturer=None, serial_number=None, bus=1, address=address
    )


@pytest.fixture
def usb_ids(tmp_path: Path) -> Path:
    path = tmp_path / "usb.ids"
    path.write_text(USB_IDS)
    return path


def _plug(monkeypatch: pytest.MonkeyPatch, devices: list[object]) -> None:
    def find(find_all: bool = False, custom_match=None, **_: object):
        assert find_all
        return iter([d for d in devices if custom_match(d)])

    monkeypatch.setattr(usb.core, "find", find)


def test_robots_are_recognised_and_every_other_device_of_a_robot_vendor_is_reported_unknown(
    monkeypatch: pytest.MonkeyPatch, usb_ids: Path
) -> None:
    pp100 = _device(0x04B8, 0x0402, "EPSON PP-100II", 4)
    pp100.serial_number = "X1Y2"
    _plug(
        monkeypatch,
        [
            pp100,
            _device(0x04B8, 0x1143, "L3150 Series", 5),
            _device(0x04B8, 0x7FFF, None, 7),  # a product id usb.ids does not list
            _device(0x0CC3, 0x0001, None, 8),  # Rimage: usb.ids lists no product at all
            _device(0x046D, 0xC077, "USB Mouse", 6),
            Locked(),
        ],
    )
    scan = detect.detect_usb(usb_ids=usb_ids)
    assert scan.available and scan.message == ""
    assert [d.describe() for d in scan.devices] == [
        '04b8:0402 Seiko Epson Corp. "EPSON PP-100II" (usb.ids: PhotoPC 850z) serial X1Y2 (bus 1 address 4) '
        "[disc publisher]",
        '04b8:1143 Seiko Epson Corp. "L3150 Series" (bus 1 address 5) [unknown Epson device]',
        "04b8:7fff Seiko Epson Corp. (bus 1 address 7) [unknown Epson device]",
        "0cc3:0001 Rimage Corp. (bus 1 address 8) [unknown Rimage device]",
        "04b8:0007 Seiko Epson Corp. (usb.ids: Printer) (bus 1 address 9) [unknown Epson device]",
    ]


def test_primera_and_robot_product_ids_come_from_the_site(monkeypatch: pytest.MonkeyPatch, usb_ids: Path) -> None:
    # Primera is not in usb.ids: a site passes the vendor id that lsusb shows on its robot (here a placeholder).
    site_vid = 0xFFF0
    _plug(monkeypatch, [_device(site_vid, 0x0011, None, 3), _device(site_vid, 0x0012, "Bravo 4202", 4)])
    assert detect.detect_usb(usb_ids=usb_ids).devices == ()
    scan = detect.detect_usb({site_vid: "Primera"}, usb_ids=usb_ids)
    assert [d.verdict for d in scan.devices] == ["unknown Primera device", "disc publisher"]
    known = detect.detect_usb({site_vid: "Primera"}, {(site_vid, 0x0011): "Disc Publisher SE"}, usb_ids=usb_ids)
    assert (
        known.devices[0].describe() == "fff0:0011 Primera (usb.ids: Disc Publisher SE) (bus 1 address 3) "
        "[disc publisher]"
    )


def test_load_usb_ids_reads_vendors_and_products_only(usb_ids: Path) -> None:
    ids = detect.load_usb_ids(usb_ids)
    assert ids == {
        0x04B8: ("Seiko Epson Corp.", {0x0007: "Printer", 0x0402: "PhotoPC 850z", 0x1143: "L3150 Series"}),
        0x0CC3: ("Rimage Corp.", {}),
    }


def test_built_in_ids_match_the_installed_usb_ids() -> None:
    """The constants are what usb.ids says (Debian usb.ids/hwdata, installed by scripts/test.sh)."""
    path = detect.find_usb_ids()
    if path is None:
        pytest.skip("usb.ids is not installed (apt-get install hwdata)")
    ids = detect.load_usb_ids(path)
    for vid, name in detect.KNOWN_VENDORS.items():
        assert ids[vid][0] == name
    # Primera Technology has no vendor entry; if one appears, it must be built in.
    assert [v for v, (name, _) in ids.items() if "primera" in name.lower()] == []
    # Robot product ids listed in usb.ids must be in ROBOT_PRODUCTS, and only those.
    listed = {
        (vid, pid): product
        for vid in detect.KNOWN_VENDORS
        for pid, product in ids[vid][1].items()
        if vid == 0x0CC3 or any(hint in product.upper() for hint in ("PP-", "DISCPRODUCER", "DISC PRODUCER"))
    }
    assert listed == dict(detect.ROBOT_PRODUCTS)
    assert len(ids[0x04B8][1]) > 50  # the parse really read Epson's product list


def test_missing_libusb_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_backend(**_: object):
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", no_backend)
    scan = detect.detect_usb()
    assert not scan.available and "libusb is missing" in scan.message


def test_missing_pyusb_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "HAVE_USB", False)
    scan = detect.detect_usb()
    assert not scan.available and "pip install 'appliance[usb]'" in scan.message
    assert not detect.is_available()
