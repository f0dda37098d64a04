"""Thin rclpy adapters over dexwm_ros.core and dexwm_ros.sim (one module per executable)."""
