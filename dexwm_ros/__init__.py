"""dexwm_ros: DexWM world-model planning for a Franka arm with an Allegro hand.

The generated ROS interfaces (``dexwm_ros.msg``, ``dexwm_ros.srv``, ``dexwm_ros.action``) live in
the ROS install space; extending ``__path__`` lets them merge with this source package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
