"""ROS-free core of dexwm_ros (torch only): encoder, predictor, actions, kinematics, planning."""
