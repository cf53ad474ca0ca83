"""rawdream: RAW-Dream - reinforce VLA policies inside a task-agnostic world model."""

import os

# MuJoCo picks its GL backend at import time; EGL renders offscreen on the CPU (Mesa llvmpipe) with no display.
os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"
