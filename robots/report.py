"""The text ``appliance robots`` prints: configured robots, their bridges' status, and USB devices."""

from __future__ import annotations

from collections.abc import Mapping

from robots.base import DiscRobot, RobotError
from robots.detect import UsbScan, detect_usb


def describe(robots: Mapping[str, DiscRobot], usb: UsbScan | None = None) -> str:
    """Render the robots report.

    Parameters
    ----------
    robots : Mapping of str to DiscRobot
        Configured robots by name.
    usb : UsbScan, optional
        A USB scan; :func:`robots.detect.detect_usb` is run when omitted.

    Returns
    -------
    str
        Plain text, one fact per line, ending with a newline.
    """
    lines = ["Robots:"]
    if not robots:
        lines.append("  none configured (add a [robots.epson] or [robots.primera] table)")
    for name, robot in robots.items():
        lines.append(f"  {name}: {robot.vendor}" + (f", {robot.location}" if robot.location else ""))
        lines.extend(f"    warning: {warning}" for warning in robot.setup_warnings())
        lines.extend("    " + line for line in _status_lines(robot))
    scan = usb if usb is not None else detect_usb()
    lines.append("USB devices:")
    if scan.devices:
        lines.extend(f"  {device.describe()}" for device in scan.devices)
    if scan.message:
        lines.append(f"  {scan.message}")
    return "\n".join(lines) + "\n"


def _status_lines(robot: DiscRobot) -> list[str]:
    try:
        st = robot.status()
    except RobotError as exc:
        return [f"status unavailable: {exc}"]
    bridge = f" ({st.bridge})" if st.bridge else ""
    lines = [f"bridge: {'online' if st.online else 'offline'}{bridge}, {st.state.value}: {st.reason}"]
    if not st.online:
        return lines
    if st.ink:
        lines.append("ink: " + ", ".join(f"{colour} {level}%" for colour, level in st.ink.items()))
    if st.media:
        unit = "%" if st.media_unit == "%" else f" {st.media_unit}"
        lines.append("media: " + ", ".join(f"{where} {level}{unit}" for where, level in st.media.items()))
    if st.drives:
        lines.append(
            "drives: " + ", ".join(f"{d.name} {d.state}" + (f" {d.percent}%" if d.percent else "") for d in st.drives)
        )
    lines.append("errors: " + ("; ".join(st.errors) if st.errors else "none"))
    return lines
