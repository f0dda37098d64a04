"""Recent joint states of the 23-joint robot, looked up by time."""
from __future__ import annotations

from collections import deque

import numpy as np
from sensor_msgs.msg import JointState

from dexwm_ros.core.kinematics import JOINT_NAMES
from dexwm_ros.nodes.conversions import ordered_positions, time_to_seconds


class JointStateBuffer:
    """Keeps the last ``maxlen`` joint states (ordered as ``JOINT_NAMES``) with their stamps."""

    def __init__(self, maxlen: int = 200) -> None:
        self.entries: deque[tuple[float, np.ndarray]] = deque(maxlen=maxlen)

    def add(self, msg: JointState) -> None:
        """Store ``msg``; raises ``ValueError`` if joints are missing or not finite."""
        positions = ordered_positions(msg.name, msg.position, JOINT_NAMES)
        self.entries.append((time_to_seconds(msg.header.stamp), positions))

    @property
    def newest_stamp(self) -> float | None:
        """Stamp of the latest joint state, None before the first."""
        return self.entries[-1][0] if self.entries else None

    def at(self, stamp: float, tolerance: float) -> np.ndarray | None:
        """Joint positions nearest to ``stamp`` if within ``tolerance`` seconds, else None."""
        if not self.entries:
            return None
        t, positions = min(self.entries, key=lambda entry: abs(entry[0] - stamp))
        return positions if abs(t - stamp) <= tolerance else None
