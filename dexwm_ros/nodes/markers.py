"""rviz markers of a plan's right-hand keypoints (``predicted_keypoints``).

Each message starts with a DELETEALL marker; then, per horizon step ``t``, a sphere list
(namespace ``predicted_keypoints``, id ``t``) and the hand skeleton as a line list (namespace
``predicted_hand_skeleton``, id ``t``), later steps brighter.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

#: Bones of the 21-keypoint hand: wrist to each knuckle, then along each finger.
HAND_BONES = [(0, 1 + 4 * f) for f in range(5)] + [
    (1 + 4 * f + j, 2 + 4 * f + j) for f in range(5) for j in range(3)]


def plan_markers(keypoints: np.ndarray, frame_id: str, stamp) -> MarkerArray:
    """Markers for keypoints ``(T, 21, 3)`` in ``frame_id``."""
    markers = MarkerArray(markers=[Marker(action=Marker.DELETEALL)])
    horizon = len(keypoints)
    for step, points in enumerate(keypoints):
        shade = (step + 1) / horizon
        colour = ColorRGBA(r=0.2, g=0.4 + 0.6 * shade, b=1.0 - 0.5 * shade, a=0.9)
        spheres = Marker(ns="predicted_keypoints", id=step, type=Marker.SPHERE_LIST,
                         action=Marker.ADD, color=colour)
        spheres.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in points]
        spheres.scale.x = spheres.scale.y = spheres.scale.z = 0.015
        bones = Marker(ns="predicted_hand_skeleton", id=step, type=Marker.LINE_LIST,
                       action=Marker.ADD, color=colour)
        bones.points = [spheres.points[i] for bone in HAND_BONES for i in bone]
        bones.scale.x = 0.004
        for marker in (spheres, bones):
            marker.header.frame_id = frame_id
            marker.header.stamp = stamp
            marker.pose.orientation.w = 1.0
            markers.markers.append(marker)
    return markers
