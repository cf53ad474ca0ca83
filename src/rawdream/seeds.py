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


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from any values, the same in every process (Python's hash() of a str is salted per
    interpreter, so a generator seeded with it does not reproduce across runs)."""
    import zlib

    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF
