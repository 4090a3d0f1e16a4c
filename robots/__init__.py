"""Disc-publisher drivers: one interface (:mod:`robots.base`), Epson TD Bridge and Primera PTBurn hot-folder
drivers, bridge simulators, USB detection.  Build robots with :func:`robots.registry.create_robot`.
"""

from robots.base import (
    MEDIA,
    BurnRequest,
    CancelError,
    DiscRobot,
    DriveStatus,
    HotFolderError,
    JobProgress,
    JobState,
    LabelFiles,
    RequestError,
    RobotConfigError,
    RobotError,
    RobotState,
    RobotStatus,
    UnknownTicketError,
)

__all__ = [
    "MEDIA",
    "BurnRequest",
    "CancelError",
    "DiscRobot",
    "DriveStatus",
    "HotFolderError",
    "JobProgress",
    "JobState",
    "LabelFiles",
    "RequestError",
    "RobotConfigError",
    "RobotError",
    "RobotState",
    "RobotStatus",
    "UnknownTicketError",
]
