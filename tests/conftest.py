import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def drawer_env():
    from rawdream.envs import make_env

    env = make_env("drawer-open")
    yield env
    env.close()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
