"""The text ``appliance robots`` prints."""

from __future__ import annotations

from robots.detect import UsbDevice, UsbScan
from robots.report import describe


def test_report_shows_bridges_levels_and_usb(rig, disc, wait) -> None:
    epson, _ = rig("epson", label_template=str(disc["tdd"]))
    primera, _ = rig("primera", hotfolder=str(disc["root"] / "primera-hot"))
    wait(lambda: epson.status().online and primera.status().online)
    usb = UsbScan(True, (UsbDevice(0x04B8, 0x0402, "Seiko Epson Corp.", product="EPSON PP-100II"),))
    text = describe({"epson": epson, "primera": primera}, usb=usb)
    lines = text.splitlines()
    assert lines[0] == "Robots:"
    assert lines[1] == f"  epson: Epson (TD Bridge), hot folder {disc['hot']}"
    assert lines[2] == "    bridge: online (TD Bridge 9.9.0.0 (simulator)), idle: idle"
    assert lines[3] == "    ink: cyan 100%, magenta 100%, yellow 100%, light cyan 100%, light magenta 100%, black 100%"
    assert lines[4] == "    media: stacker 1 (CD) 100%, stacker 2 (DVD) 100%"
    assert "    media: left bin 50 discs" in lines
    assert lines[-2:] == ["USB devices:", '  04b8:0402 Seiko Epson Corp. "EPSON PP-100II" [disc publisher]']


def test_report_for_an_offline_bridge_and_no_usb(rig) -> None:
    robot, _ = rig("epson", start=False)
    text = describe({"epson": robot}, usb=UsbScan(False, message="USB detection off: pyusb is not installed"))
    assert "    bridge: offline, offline: bridge offline: no TDBStatus.txt in " in text
    assert text.endswith("USB devices:\n  USB detection off: pyusb is not installed\n")
