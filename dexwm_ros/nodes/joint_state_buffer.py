"""Recent joint states of the 23-joint robot, looked up by time."""
from __future__ import annotations

from collections import deque

import numpy as np
from sensor_msgs.msg import JointState

from dexwm_ros.core.kinematics import JOINT_NAMES
from dexwm_ros.nodes.conversions import time_to_seconds


class JointStateBuffer:
    """Keeps the last ``maxlen`` joint states (ordered as ``JOINT_NAMES``) with their stamps."""

    def __init__(self, maxlen: int = 200) -> None:
        self.entries: deque[tuple[float, np.ndarray]] = deque(maxlen=maxlen)

    def add(self, msg: JointState) -> None:
        """Store ``msg``; raises ``ValueError`` if joints are missing or not finite."""
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [name for name in JOINT_NAMES if name not in index]
        if missing:
            raise ValueError(f"joint_states lacks {len(missing)} joints, e.g. {missing[:3]}")
        positions = np.array([msg.position[index[name]] for name in JOINT_NAMES])
        if not np.isfinite(positions).all():
            raise ValueError("joint_states contains NaN or infinite positions")
        self.entries.append((time_to_seconds(msg.header.stamp), positions))

    def latest(self) -> np.ndarray | None:
        return self.entries[-1][1] if self.entries else None

    def at(self, stamp: float, tolerance: float) -> np.ndarray | None:
        """Joint positions nearest to ``stamp`` if within ``tolerance`` seconds, else None."""
        if not self.entries:
            return None
        t, positions = min(self.entries, key=lambda entry: abs(entry[0] - stamp))
        return positions if abs(t - stamp) <= tolerance else None
