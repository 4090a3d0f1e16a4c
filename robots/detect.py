"""USB presence probe for disc robots through pyusb.

The robots have no public USB protocol (specs/robots.md §4): pyusb can only tell that a device of a known
vendor is plugged in, and read its descriptor strings.

Vendor and product ids come from the public USB ID database (``usb.ids``, Debian packages ``usb.ids`` /
``hwdata``), as of its 2025.07.26 release:

* ``04b8`` Seiko Epson Corp.: no Discproducer (PP-xx) product is listed; its printers and scanners are.
* ``0cc3`` Rimage Corp.: no product is listed.
* Primera Technology: no vendor entry at all, so no id is built in; a site passes the id read from ``lsusb`` on
  its robot through ``extra_vendors``.

A device of these vendors counts as a disc publisher when its product id is a known robot (``robot_products``;
none are public yet) or its product string names one ("PP-100", "Bravo"...).  Every other device of them is
reported as "unknown <vendor> device", never left without a verdict.  tests/robots/test_usb_detect.py checks the
constants against the installed ``usb.ids``, so they cannot drift from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

try:  # pyusb is the optional [usb] extra
    import usb.core

    HAVE_USB = True
except ImportError:  # pragma: no cover - depends on the installation
    HAVE_USB = False

#: Vendor ids of disc-robot makers, with their names exactly as usb.ids spells them.
KNOWN_VENDORS: Mapping[int, str] = {0x04B8: "Seiko Epson Corp.", 0x0CC3: "Rimage Corp."}
#: The short name used in "unknown <vendor> device".
SHORT_NAMES: Mapping[int, str] = {0x04B8: "Epson", 0x0CC3: "Rimage"}
#: Disc-publisher product ids listed in usb.ids, (vendor, product) -> name.  usb.ids lists none today.
ROBOT_PRODUCTS: Mapping[tuple[int, int], str] = {}
#: Product-string fragments that mark a disc publisher.
ROBOT_HINTS = ("PP-", "DISCPRODUCER", "DISC PRODUCER", "DISC PUBLISHER", "BRAVO", "RIMAGE")
#: Where Debian and other distributions install usb.ids.
USB_IDS_PATHS = (
    Path("/usr/share/misc/usb.ids"),
    Path("/usr/share/hwdata/usb.ids"),
    Path("/var/lib/usbutils/usb.ids"),
    Path("/usr/share/usb.ids"),
)


def find_usb_ids() -> Path | None:
    """The installed usb.ids file, or None."""
    return next((path for path in USB_IDS_PATHS if path.is_file()), None)


def load_usb_ids(path: Path) -> dict[int, tuple[str, dict[int, str]]]:
    """Parse usb.ids: vendor id -> (vendor name, {product id: product name}).

    Only the vendor list at the top is read (it ends where the device class lists begin).
    """
    vendors: dict[int, tuple[str, dict[int, str]]] = {}
    current: dict[int, str] | None = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("C "):  # device classes follow the vendors
                break
            if line[0] != "\t":
                vid, _, name = line.rstrip("\n").partition("  ")
                try:
                    current = {}
                    vendors[int(vid, 16)] = (name.strip(), current)
                except ValueError:
                    current = None
            elif current is not None and not line.startswith("\t\t"):
                pid, _, name = line.strip().partition("  ")
                try:
                    current[int(pid, 16)] = name.strip()
                except ValueError:
                    continue
    return vendors


@dataclass(frozen=True)
class UsbDevice:
    """One USB device of a disc-robot vendor.

    ``short_vendor`` is the vendor's short name ("Epson"), ``known_robot`` the usb.ids (or configured) name when
    the product id is a known disc publisher, and ``listed_as`` the usb.ids name of a product id listed there as
    something else (a printer, a scanner).
    """

    vendor_id: int
    product_id: int
    vendor: str
    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    bus: int | None = None
    address: int | None = None
    short_vendor: str = ""
    known_robot: str | None = None
    listed_as: str | None = None

    @property
    def likely_robot(self) -> bool:
        """True when the product id is a known robot or the product string names a disc publisher."""
        if self.known_robot:
            return True
        text = (self.product or "").upper()
        return any(hint in text for hint in ROBOT_HINTS)

    @property
    def verdict(self) -> str:
        """``disc publisher``, or ``unknown <vendor> device``."""
        if self.likely_robot:
            return "disc publisher"
        return f"unknown {self.short_vendor or self.vendor} device"

    def describe(self) -> str:
        """One line: ``04b8:0001 Seiko Epson Corp. "PP-100" serial X [disc publisher]``."""
        parts = [f"{self.vendor_id:04x}:{self.product_id:04x}", self.vendor]
        if self.product:
            parts.append(f'"{self.product}"')
        name = self.known_robot or self.listed_as
        if name and name != self.product:
            parts.append(f"(usb.ids: {name})")
        if self.serial:
            parts.append(f"serial {self.serial}")
        if self.bus is not None:
            parts.append(f"(bus {self.bus} address {self.address})")
        parts.append(f"[{self.verdict}]")
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


def detect_usb(
    extra_vendors: Mapping[int, str] | None = None,
    robot_products: Mapping[tuple[int, int], str] | None = None,
    usb_ids: Path | None = None,
) -> UsbScan:
    """List USB devices whose vendor id belongs to a disc-robot maker.

    Parameters
    ----------
    extra_vendors : Mapping of int to str, optional
        More vendor ids to look for (e.g. Primera's, read from ``lsusb`` on the robot), id -> short name.
    robot_products : Mapping of (int, int) to str, optional
        More (vendor, product) ids known to be disc publishers.
    usb_ids : Path, optional
        The usb.ids file naming listed products; found in the usual places when omitted.

    Returns
    -------
    UsbScan
        Never raises: a missing pyusb or libusb is reported in ``message`` with what to install.
    """
    if not HAVE_USB:
        return UsbScan(False, message="USB detection off: pyusb is not installed (pip install 'appliance[usb]')")
    vendors = {**KNOWN_VENDORS, **(extra_vendors or {})}
    shorts = {**SHORT_NAMES, **(extra_vendors or {})}
    robots = {**ROBOT_PRODUCTS, **(robot_products or {})}
    path = usb_ids or find_usb_ids()
    listed: dict[int, tuple[str, dict[int, str]]] = {}
    if path is not None:
        try:
            listed = load_usb_ids(path)
        except OSError as exc:
            LOGGER.debug("cannot read %s: %s", path, exc)
    try:
        found = list(usb.core.find(find_all=True, custom_match=lambda d: d.idVendor in vendors) or [])
    except usb.core.NoBackendError:
        return UsbScan(False, message="USB detection off: libusb is missing (apt-get install libusb-1.0-0)")
    except (usb.core.USBError, OSError) as exc:
        return UsbScan(False, message=f"USB detection failed: {exc}")
    devices = tuple(_device(dev, vendors, shorts, robots, listed) for dev in found)
    if not devices:
        return UsbScan(True, message="no Epson, Rimage or other configured robot vendor on USB")
    return UsbScan(True, devices=devices)


def _device(
    dev: Any,
    vendors: Mapping[int, str],
    shorts: Mapping[int, str],
    robots: Mapping[tuple[int, int], str],
    listed: Mapping[int, tuple[str, dict[int, str]]],
) -> UsbDevice:
    vid, pid = int(dev.idVendor), int(dev.idProduct)
    return UsbDevice(
        vendor_id=vid,
        product_id=pid,
        vendor=vendors.get(vid, f"vendor {vid:04x}"),
        manufacturer=_string(dev, "manufacturer"),
        product=_string(dev, "product"),
        serial=_string(dev, "serial_number"),
        bus=getattr(dev, "bus", None),
        address=getattr(dev, "address", None),
        short_vendor=shorts.get(vid, ""),
        known_robot=robots.get((vid, pid)),
        listed_as=listed.get(vid, ("", {}))[1].get(pid),
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
