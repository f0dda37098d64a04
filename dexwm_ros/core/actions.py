"""Dexterous actions: 44 x 3 = 132 floats (DexWM paper section 3.1, appendix C.3).

Rows 0-20 left hand, 21-41 right hand, 42 camera translation delta, 43 camera rotation delta.
Each hand has 21 keypoints in ``HAND21`` order, metres, in the camera frame of the first
context frame.
"""
from __future__ import annotations

import torch

NUM_HAND_KEYPOINTS = 21
ACTION_ROWS = 44
ACTION_DIM = ACTION_ROWS * 3
LEFT_HAND_ROWS = slice(0, 21)
RIGHT_HAND_ROWS = slice(21, 42)
CAMERA_TRANSLATION_ROW = 42
CAMERA_ROTATION_ROW = 43

FINGERS = ("thumb", "index", "middle", "ring", "little")
FINGER_JOINTS = ("knuckle", "intermediate_base", "intermediate_tip", "tip")
#: Names of the 21 keypoints of one hand: wrist, then 4 per finger from knuckle to tip.
HAND21 = ("wrist",) + tuple(f"{f}_{j}" for f in FINGERS for j in FINGER_JOINTS)
#: Indices into HAND21 of the wrist and the five fingertips (the keypoint head's six maps).
WRIST_AND_TIPS = (0, 4, 8, 12, 16, 20)

#: Allegro fingers in the order ``allegro_to_hand21`` expects them.
ALLEGRO_FINGERS = ("thumb", "index", "middle", "ring")


def allegro_to_hand21(wrist: torch.Tensor, fingers: torch.Tensor) -> torch.Tensor:
    """Map Allegro keypoints to the 21 human-hand keypoints.

    ``wrist`` is ``(..., 3)``; ``fingers`` is ``(..., 4, 4, 3)`` for thumb, index, middle, ring,
    each from knuckle to tip. The Allegro has no little finger: the ring finger is repeated
    (paper appendix C.3). Returns ``(..., 21, 3)``.
    """
    if fingers.shape[-3:] != (4, 4, 3) or wrist.shape[-1] != 3:
        raise ValueError(
            f"allegro_to_hand21: expected wrist (..., 3) and fingers (..., 4, 4, 3), "
            f"got {tuple(wrist.shape)} and {tuple(fingers.shape)}"
        )
    five = torch.cat([fingers, fingers[..., 3:4, :, :]], dim=-3)
    return torch.cat([wrist.unsqueeze(-2), five.flatten(-3, -2)], dim=-2)
