"""USB presence probe, with pyusb faked at its edge (usb.core.find)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import usb.core

from robots import detect


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


def test_epson_and_rimage_devices_are_listed_and_robots_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        FakeDevice(
            idVendor=0x04B8,
            idProduct=0x0402,
            product="EPSON PP-100II",
            manufacturer="EPSON",
            serial_number="X1Y2",
            bus=1,
            address=4,
        ),
        FakeDevice(
            idVendor=0x04B8,
            idProduct=0x1143,
            product="L3150 Series",
            manufacturer="EPSON",
            serial_number=None,
            bus=1,
            address=5,
        ),
        FakeDevice(
            idVendor=0x046D,
            idProduct=0xC077,
            product="USB Mouse",
            manufacturer="Logitech",
            serial_number=None,
            bus=1,
            address=6,
        ),
        Locked(),
    ]

    def find(find_all: bool = False, custom_match=None, **_: object):
        assert find_all
        return iter([d for d in devices if custom_match(d)])

    monkeypatch.setattr(usb.core, "find", find)
    scan = detect.detect_usb()
    assert scan.available and scan.message == ""
    assert [d.describe() for d in scan.devices] == [
        '04b8:0402 Seiko Epson Corp. "EPSON PP-100II" serial X1Y2 (bus 1 address 4) [disc publisher]',
        '04b8:1143 Seiko Epson Corp. "L3150 Series" (bus 1 address 5)',
        "04b8:0007 Seiko Epson Corp. (bus 1 address 9)",
    ]


def test_extra_vendor_ids_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    bravo = FakeDevice(
        idVendor=0x0F25,
        idProduct=0x0011,
        product="Bravo 4202",
        manufacturer="Primera",
        serial_number=None,
        bus=2,
        address=3,
    )
    monkeypatch.setattr(
        usb.core, "find", lambda find_all=False, custom_match=None: [d for d in [bravo] if custom_match(d)]
    )
    assert detect.detect_usb().devices == ()
    scan = detect.detect_usb({0x0F25: "Primera Technology"})
    assert scan.devices[0].vendor == "Primera Technology" and scan.devices[0].likely_robot


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
