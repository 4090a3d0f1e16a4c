"""USB presence probe for disc robots through pyusb.

The robots have no public USB protocol (specs/robots.md §4): pyusb can only tell that a device of a known
vendor is plugged in, and read its descriptor strings.  Epson's vendor id covers printers and scanners too, so
a device counts as a likely robot only when its product string looks like one.  Primera's vendor id is
UNCONFIRMED and therefore not built in; pass it (and any other) through ``extra_vendors``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LOGGER = logging.getLogger(__name__)

try:  # pyusb is the optional [usb] extra
    import usb.core

    HAVE_USB = True
except ImportError:  # pragma: no cover - depends on the installation
    HAVE_USB = False

#: Vendor ids from usb.ids (spec §4).
KNOWN_VENDORS: Mapping[int, str] = {0x04B8: "Seiko Epson Corp.", 0x0CC3: "Rimage Corp."}
#: Product-string fragments that mark a disc publisher.
ROBOT_HINTS = ("PP-", "DISCPRODUCER", "DISC PUBLISHER", "BRAVO", "RIMAGE", "DISC PRODUCER")


@dataclass(frozen=True)
class UsbDevice:
    """One USB device of a disc-robot vendor."""

    vendor_id: int
    product_id: int
    vendor: str
    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    bus: int | None = None
    address: int | None = None

    @property
    def likely_robot(self) -> bool:
        """True when the product string names a disc publisher (or the vendor only makes robots)."""
        if self.vendor_id == 0x0CC3:
            return True
        text = (self.product or "").upper()
        return any(hint in text for hint in ROBOT_HINTS)

    def describe(self) -> str:
        """One line: ``04b8:0001 Seiko Epson Corp. "PP-100" serial X [disc publisher]``."""
        parts = [f"{self.vendor_id:04x}:{self.product_id:04x}", self.vendor]
        if self.product:
            parts.append(f'"{self.product}"')
        if self.serial:
            parts.append(f"serial {self.serial}")
        if self.bus is not None:
            parts.append(f"(bus {self.bus} address {self.address})")
        if self.likely_robot:
            parts.append("[disc publisher]")
        return " ".join(parts)


@dataclass(frozen=True)
class UsbScan:
    """Result of :func:`detect_usb`: the devices found, or why nothing could be looked at."""

    available: bool
    devices: tuple[UsbDevice, ...] = ()
    message: str = ""


def is_available() -> bool:
    """True when pyusb is importable (libusb may still be missing; :func:`detect_usb` says so)."""
    return HAVE_USB


def detect_usb(extra_vendors: Mapping[int, str] | None = None) -> UsbScan:
    """List USB devices whose vendor id belongs to a disc-robot maker.

    Parameters
    ----------
    extra_vendors : Mapping of int to str, optional
        More vendor ids to look for (e.g. Primera's once confirmed on the hardware).

    Returns
    -------
    UsbScan
        Never raises: a missing pyusb or libusb is reported in ``message`` with what to install.
    """
    if not HAVE_USB:
        return UsbScan(
            False, message="USB detection off: pyusb is not installed (pip install 'appliance[usb]')"
        )
    vendors = {**KNOWN_VENDORS, **(extra_vendors or {})}
    try:
        found = list(usb.core.find(find_all=True, custom_match=lambda d: d.idVendor in vendors) or [])
    except usb.core.NoBackendError:
        return UsbScan(False, message="USB detection off: libusb is missing (apt-get install libusb-1.0-0)")
    except (usb.core.USBError, OSError) as exc:
        return UsbScan(False, message=f"USB detection failed: {exc}")
    devices = tuple(_device(dev, vendors) for dev in found)
    if not devices:
        return UsbScan(True, message="no Epson, Rimage or other configured robot vendor on USB")
    return UsbScan(True, devices=devices)


def _device(dev: Any, vendors: Mapping[int, str]) -> UsbDevice:
    vid = int(dev.idVendor)
    return UsbDevice(
        vendor_id=vid,
        product_id=int(dev.idProduct),
        vendor=vendors.get(vid, f"vendor {vid:04x}"),
        manufacturer=_string(dev, "manufacturer"),
        product=_string(dev, "product"),
        serial=_string(dev, "serial_number"),
        bus=getattr(dev, "bus", None),
        address=getattr(dev, "address", None),
    )


def _string(dev: Any, attr: str) -> str | None:
    # Reading descriptor strings needs access rights to the device; without them we still know it is there.
    try:
        value = getattr(dev, attr)
    except (ValueError, NotImplementedError, OSError) as exc:
        LOGGER.debug("cannot read %s of USB device: %s", attr, exc)
        return None
    except Exception as exc:  # usb.core.USBError and backend-specific errors
        LOGGER.debug("cannot read %s of USB device: %s", attr, exc)
        return None
    return str(value) if value else None
