"""Disjoint seed ranges per use, in one place, so no seed whose reset is used for training is ever evaluated.

Meta-World placements are a function of the seed; evaluation seeds must not appear in any training data,
including the reset observations that RL in imagination starts from.
"""

EVAL = 100_000  # policy evaluation in the real simulator: EVAL + i
DREAM_INIT = 200_000  # reset observations that imagined rollouts start from
DEMOS = 300_000  # expert demonstrations (the 1-shot SFT demo of a target is DEMOS + 0)
PLAY = 400_000  # task-free play data
LABELED = 500_000  # labeled rollouts for judges
JUDGE_EVAL = 600_000  # labeled rollouts of target tasks, for judge evaluation only
POLICY_ROLLOUTS = 800_000  # labeled rollouts of a learned policy on pretraining tasks, for judge training

# world-model noise (not simulator seeds): the judge's imagined replays of labeled episode e use REPLAY_NOISE + e
REPLAY_NOISE = 10_000

# random streams inside the trainers (``training.step_generator(seed, step, stream)``, ``step_seed``): each trainer
# draws its batches and noise from its own stream. The numbers are part of every trained model's identity -
# changing one changes the models the same seed gives.
STREAM_WM_AUTOENCODER = 1
STREAM_WM_DYNAMICS = 2
STREAM_POLICY = 3
STREAM_JUDGE = 4
STREAM_VAE_NOISE = 11  # the VAE's sampling noise (torch's global generator)
STREAM_POLICY_DROPOUT = 13  # dropout (torch's global generator)

# fixed draws that do not depend on any run seed, so every seed measures with the same sample
WM_DELTA_STATS_SAMPLE = 0  # the frames the world model's latent-delta statistics are taken over
WM_VALIDATION_SAMPLE = 1  # the world model's validation batch
WM_VALIDATION_NOISE = 0  # the diffusion noise of that batch's loss
BOOTSTRAP = 0  # resamples of the paired difference's bootstrap interval

# the two evaluation protocols, never mixed in one number:
#   practised - the initial states RL trained from (DREAM_INIT + i): LIBERO's and the paper's protocol, a fixed set
#               of initial states per task shared by RL and evaluation;
#   new       - seeds disjoint from every training use (EVAL + i): does what RL learned carry to new layouts?
LAYOUTS = {"practised": DREAM_INIT, "new": EVAL}


def layout_seed(layouts: str, i: int) -> int:
    """The simulator seed of evaluation episode ``i`` under protocol ``layouts`` (practised | new)."""
    if layouts not in LAYOUTS:
        raise ValueError(f"unknown evaluation layouts {layouts!r}; use practised or new")
    return LAYOUTS[layouts] + i


def step_seed(seed: int, step: int, stream: int, bits: int = 31) -> int:
    """The seed of one training step of one stream: what step ``step`` draws does not depend on how the run got
    there, so a run resumed from a checkpoint continues exactly as the uninterrupted one. (A tuple of ints hashes
    the same in every interpreter; only str hashing is salted.)"""
    return hash((seed, step, stream)) & ((1 << bits) - 1)


def rl_states_seed(run_seed: int, it: int, rnd: int = 0) -> int:
    """Which practised initial states RL iteration ``it`` draws in dynamic-sampling round ``rnd``."""
    return run_seed * 100_003 + it if rnd == 0 else stable_seed("states", run_seed, it, rnd)


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from any values, the same in every process (Python's hash() of a str is salted per
    interpreter, so a generator seeded with it does not reproduce across runs)."""
    import zlib

    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF
