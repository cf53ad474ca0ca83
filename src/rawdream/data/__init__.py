"""Datasets on disk (LeRobot v3 layout), the training frame cache, and data collection."""
