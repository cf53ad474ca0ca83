"""``rawdream dream``: GRPO on a held-out task inside the frozen world model, rewarded by a frozen judge, with
dual-noise verification - and, with ``env_mode=sim``, the online-RL baseline in the real simulator.

One iteration:
  1. pick ``groups`` initial states (real reset observations of the target task - never evaluation seeds - or the
     first frames of a LeRobot dataset's episodes) and roll ``group_size`` rollouts from each for ``horizon``
     action chunks, sampling the policy; each imagined rollout has its own noise seed;
  2. the judge watches each whole video: 1 success, 0 failure, abstain = unreliable;
  3. dual-noise verification: every rollout judged successful is re-imagined with the same actions and a fresh
     noise seed and judged again; a flip marks it unreliable (see :mod:`rawdream.rl.grpo` for what that does);
  4. several epochs of minibatch PPO-clip updates (asymmetric clip, per-token averaging, no KL by default).
Checkpoints every iteration; a killed run resumes at the next iteration with identical random streams.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from rawdream import seeds
from rawdream.config import save_config
from rawdream.distributed import LOCAL, Backend, RayConfig, open_backend
from rawdream.envs.base import EnvConfig
from rawdream.envs.tasks import canonical_task, instruction
from rawdream.policy.base import check_exploration
from rawdream.reward.base import (
    JudgeConfig,
    check_abstains,
    judge_config,
    make_judge,
    probe_judge,
    reading_through,
)
from rawdream.rl.dnv import Verification, verdict_score, verify
from rawdream.rl.grpo import clipped_surrogate, group_advantages
from rawdream.rl.rollouts import (
    Draw,
    ImaginedRollouts,
    SimulatorRollouts,
    dataset_initial_states,
    merge_rollouts,
    sim_initial_states,
)
from rawdream.splits import SplitConfig
from rawdream.training import MetricsLogger, load_checkpoint, resolve_device, save_checkpoint, set_threads
from rawdream.world_model.model import SamplerConfig, overlay_changed


@dataclass
class DreamConfig:
    # readout keys added after runs were recorded: at these values they leave a recorded stage's hash as it was
    HASH_QUIET: ClassVar[dict] = {
        "judge.object_gate_space": "head",
        "judge.object_gate_min_px": 3.0,
        "judge.object_fade_min": 0.0,
        "judge.calibration_wm": "",
        "judge.calibration_draws": 4,
        "dnv_sampler": None,
        "dnv_flip": "unreliable",
    }
    RANGES: ClassVar[dict] = {
        "init_states": ">=1",
        "groups": ">=1",
        "group_size": (">=2", "a group of one has no advantage"),
        "horizon": ">=1",
        "temperature": (">0", "GRPO needs sampled actions"),
        "iterations": ">=1",
        "epochs": ">=1",
        "minibatch": ">=1",
        "lr": ">0",
        "clip_low": "[0,1)",
        "clip_high": ">=0",
        "kl_coef": ">=0",
        "entropy_coef": ">=0",
        "sample_rounds": ">=1",
        "dnv_redraws": (">=1", "turn verification off with --dnv=false, not 0 redraws"),
        "dnv_threshold": ("[0,1]", "0: a redraw is confirmed by the judge's own verdict"),
        "max_unreliable": ">=0",
        "eval_every": (">=0", "0: evaluate only at the end"),
        "eval_episodes": ">=1",
        "gallery": ">=0",
        "workers": (">=0", "0 or 1: in this process"),
        "threads": (">=0", "0: all cores"),
    }

    task: str = ""
    split: SplitConfig = field(default_factory=SplitConfig)
    env_mode: str = (
        "wm"  # wm: imagination (RAW-Dream) | sim: the online-RL baseline with the simulator's reward
    )
    judge: JudgeConfig = field(default_factory=judge_config)  # generalist unless --judge.backend
    # the real-simulator evaluations' episodes (--env.max_steps); RL's own rollouts are --horizon chunks long
    env: EnvConfig = field(default_factory=EnvConfig)
    # distinct real reset observations (seeds DREAM_INIT + i): RL practises these layouts only, and on 16 it
    # raised their success while held-out layouts did not follow (README, "RL in imagination")
    init_states: int = 64
    groups: int = 4  # initial states per iteration (B)
    group_size: int = 8  # rollouts per initial state (G)
    horizon: int = (
        16  # action chunks per rollout: 16 x 8 = 128 steps, the evaluation episode and judge labels
    )
    temperature: float = 1.0
    # how a rollout's action tokens are drawn: "token" each independently; "chunk" with one uniform number per
    # action dimension shared by the chunk's steps (same per-token distribution; the deviation persists over the
    # chunk instead of averaging out, a different motion rather than jitter - VLAPolicy.sample); "episode" the
    # same uniform numbers in every chunk of a rollout, so the deviation persists over the whole episode.
    # chunk + 3 sampling rounds (recipe H) is what made online RL raise drawer-open, lever-pull and sweep-into
    # significantly where token noise with one round left sweep-into and lever-pull in place (docs/results.md)
    exploration: str = "chunk"
    iterations: int = 30
    epochs: int = 2
    minibatch: int = 128
    # with uninformative groups left out of the loss, 3e-4 raised drawer-open's practised layouts 37.5 -> 56.2%
    # in 40 online iterations where 1e-4 gave 40.6% (docs/results.md, online-RL candidates)
    lr: float = 3e-4
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0  # optional KL to the starting (SFT) policy
    entropy_coef: float = 0.0
    # reward per rollout: "verdict" - the paper's 0/1: a group in which the judge sees no success has zero
    # advantage, so the policy is left alone where the judge has nothing to say; "score" - the judge's calibrated
    # success probability (verified successes: its mean over both noise draws), which ranks every group but
    # also follows the judge's errors when it never calls a success (paper-table --quick: door-close 96.7% -> 0%
    # with score, unchanged with verdict). A verdict without a score counts as 0/1 either way.
    reward: str = "verdict"
    # online baseline (env_mode=sim): reward = the simulator's success, or the judge's verdict on the real video
    sim_reward: str = "success"
    # groups whose reliable rewards are all equal carry no advantage: leave them out of the per-token mean
    # (DAPO / SimpleVLA-RL dynamic sampling, the filter half)
    drop_uninformative: bool = True
    # the other half: up to this many draws of ``groups`` groups per iteration until ``groups`` informative ones
    # are in hand (1: no resampling). In the simulator each extra draw costs real trajectories (counted).
    sample_rounds: int = 3
    dnv: bool = True
    dnv_redraws: int = 1
    # a redraw confirms a success when its judge score is >= this (judges with a score); 0: the judge's verdict,
    # i.e. the judge's own --judge.threshold
    dnv_threshold: float = 0.0
    # a second world model (a folder) re-imagines the judged successes instead of this one under other noise: a
    # hallucination that one model draws under any noise - what RL finds against a single model - must then be
    # drawn by a model trained apart too (cross-model verification; "": the paper's second noise draw)
    dnv_world_model: str = ""
    # DNV's redraws under a sampler of their own (``--dnv_sampler.context_level=600``: the keys set here over the
    # run's sampler; unset: as the first draws, the paper's DNV). Why: with the 2-step sampler a redraw re-paints
    # what its context already shows, so a hallucinated success survives any noise seed; a redraw whose context is
    # noised heavily must re-derive the outcome from the first frame and the actions - on fixed drawer-open actions
    # two such open-loop redraws confirmed 27% of the SFT policy's true successes and 9% of the collapsed RL policy's
    # hallucinated ones, against 55% / 62% at the model's own sampler (scripts/redraw_separation.py, docs/judges.md)
    dnv_sampler: SamplerConfig | None = None
    # what a flip does: "unreliable" - the paper: the rollout leaves its group's statistics (advantage 0) and a
    # group with more than --max_unreliable flips is dropped; "failure" - the reward is what survived verification
    # (a flipped success counts as a failure), so a success the world model cannot redraw is not one
    dnv_flip: str = "unreliable"
    # a privileged diagnostic, never a reward: replay every imagined rollout's actions in the simulator from its
    # initial state and log how often the judged successes that verification kept and flipped, and the judged
    # failures, truly succeed (diag/* in metrics.jsonl) - what DNV removes and keeps. Costs a replay per rollout.
    diagnose_replay: bool = False
    # the world model's sampler for this run's imagination, first draws and DNV's redraws alike
    # (``--sampler.steps=4``: Euler steps per imagined step): the keys that differ from SamplerConfig's defaults
    # replace the world model's own (model.sampler in its world_model.json); unset: the model's own
    sampler: SamplerConfig | None = None
    max_unreliable: int = 2
    eval_every: int = 10
    eval_episodes: int = 20
    eval_layouts: list[str] = field(default_factory=lambda: ["practised", "new"])
    # also evaluate the starting policy before the first iteration: the final evaluation is then paired with it
    eval_start: bool = False
    gallery: int = 4  # imagined rollouts saved per evaluation for the report
    workers: int = 2
    threads: int = 2
    device: str = "auto"  # learner and local imagination: the GPU where PyTorch sees one, else the CPU
    seed: int = 0
    ray: RayConfig = field(default_factory=RayConfig)  # --ray / --ray-address: imagination on Ray workers

    def validate(self) -> None:
        if self.env_mode not in ("wm", "sim"):
            raise ValueError(f"env_mode must be wm or sim, got {self.env_mode!r}")
        if self.reward not in ("score", "verdict"):
            raise ValueError(f"reward must be score or verdict, got {self.reward!r}")
        bad = [x for x in self.eval_layouts if x not in seeds.LAYOUTS]
        if bad:
            raise ValueError(f"eval_layouts {bad}: choose from practised, new")
        check_exploration(self.exploration)
        if self.sim_reward not in ("success", "judge"):
            raise ValueError(f"sim_reward must be success or judge, got {self.sim_reward!r}")
        if self.task:
            canonical_task(self.task)
        if self.groups > self.init_states:
            raise ValueError(
                f"groups={self.groups} initial states per iteration but only init_states={self.init_states} "
                f"distinct ones; raise --init_states or lower --groups"
            )
        if self.dnv_world_model and not (self.dnv and self.env_mode == "wm"):
            raise ValueError(
                f"--dnv_world_model={self.dnv_world_model} verifies imagined successes: it needs --dnv=true and "
                f"--env_mode=wm"
            )
        if self.dnv_flip not in ("unreliable", "failure"):
            raise ValueError(f"dnv_flip must be unreliable or failure, got {self.dnv_flip!r}")
        if self.dnv_sampler is not None and not (self.dnv and self.env_mode == "wm"):
            raise ValueError(
                "--dnv_sampler.* sets the sampler of DNV's redraws: it needs --dnv=true and --env_mode=wm"
            )
        if self.diagnose_replay and self.env_mode != "wm":
            raise ValueError("--diagnose_replay replays imagined rollouts: it needs --env_mode=wm")
        if min(self.groups, self.group_size, self.horizon, self.iterations, self.sample_rounds) < 1:
            raise ValueError(
                "groups, group_size, horizon, iterations and sample_rounds must all be at least 1"
            )


# ------------------------------------------------------------------------------------------------------------
# the algorithm: one iteration = rollout -> judge -> verify -> advantages -> update
# ------------------------------------------------------------------------------------------------------------
class Dreamer:
    """GRPO with dual-noise verification on one task. :meth:`iteration` reads top to bottom:

    1. rollout     ``groups`` initial states x ``group_size`` sampled rollouts, from the rollout source: the world
                   model (RAW-Dream) or the real simulator (the online baseline) - :mod:`rawdream.rl.rollouts`
    2. judge       each rollout's outcome: the judge's verdict on its video, or online the simulator's own success
    3. verify      dual-noise verification: each judged success is redrawn under other noise and judged again; a
                   flip makes the rollout unreliable (imagination only: the simulator has no noise to redraw)
    4. advantages  normalised within each group over its reliable rollouts; uninformative groups leave the loss
    5. update      epochs of minibatch PPO-clip on the time steps of the rollouts that carry an advantage
    Phases 1-3 repeat, on other initial states, for up to ``sample_rounds`` draws until ``groups`` groups carry
    an advantage (dynamic sampling).
    """

    def __init__(
        self,
        cfg: DreamConfig,
        policy,
        world_model=None,
        init_from: str | None = None,
        log_fn=print,
        imagination=None,
        backend: Backend = LOCAL,
        verifier=None,
    ):
        self.cfg = cfg
        self.task = canonical_task(cfg.task)
        self.instruction = instruction(self.task)
        self.policy = policy
        self.wm = world_model
        self.log_fn = log_fn
        self.backend = backend  # where imagination, the judge and the simulators run: here, or on Ray workers
        self.verifier = (
            verifier  # what redraws DNV's draws: a second world model (--dnv_world_model) and/or a view of a
            # model under the redraws' own sampler (--dnv_sampler.*); None: this model as it samples
        )
        if cfg.env_mode == "wm" and world_model is None:
            raise ValueError("dream in imagination needs a world model (--wm DIR)")
        uses_judge = cfg.env_mode == "wm" or cfg.sim_reward == "judge"
        self.judge = make_judge(cfg.judge, purpose="training") if uses_judge else None
        if self.judge is not None:
            probe_judge(self.judge)  # a dead or misconfigured VLM stops here, not after an hour of no-op RL
        self.init = (
            dataset_initial_states(init_from, cfg.init_states)
            if init_from
            else sim_initial_states(self.task, cfg.init_states, cfg.env, cfg.workers, backend)
        )
        if len(self.init) < cfg.groups:
            raise ValueError(
                f"{len(self.init)} initial states available but groups={cfg.groups} per iteration; "
                f"use a dataset with more episodes or lower --groups"
            )
        if self.judge is not None and self.judge.privileged and any(s["seed"] is None for s in self.init):
            raise ValueError(
                "the oracle judge replays actions in the simulator: it needs simulator initial states"
            )
        if cfg.env_mode == "wm":
            if cfg.sampler is not None:
                if imagination is not None:
                    raise ValueError(
                        "--sampler.* sets the sampler of imagination this run builds; a given "
                        "imagination brings its own world model"
                    )
                # the keys set here over the world model's own sampler, on a view of the model that shares its
                # weights (the caller's model keeps its own); imagination workers copy the view
                self.wm = world_model = world_model.with_sampler(
                    overlay_changed(world_model.cfg.sampler, cfg.sampler)
                )
            if cfg.dnv_sampler is not None:
                # the redraws' own sampler over the run's, on a view of the model that redraws (this one, or the
                # second model of --dnv_world_model); the redraws then run in this process, as cross-model ones do
                base = self.verifier if self.verifier is not None else world_model
                own = overlay_changed(base.cfg.sampler, cfg.dnv_sampler)
                if own == base.cfg.sampler:
                    raise ValueError(
                        "--dnv_sampler.* changes nothing in the redraws' sampler (only keys set away from their "
                        "defaults apply, and these already hold the run's values): name a key whose value differs "
                        "or drop --dnv_sampler"
                    )
                self.verifier = base.with_sampler(own)
            self.source = ImaginedRollouts(
                imagination or backend.imagination(policy, world_model),
                self.init,
                self.instruction,
                cfg.horizon,
                cfg.temperature,
                cfg.seed,
                cfg.exploration,
            )
        else:
            self.source = SimulatorRollouts(
                policy,
                self.init,
                self.task,
                self.instruction,
                cfg.env,
                cfg.horizon,
                cfg.temperature,
                cfg.seed,
                cfg.workers,
                backend,
                cfg.exploration,
            )
        if self.judge is not None:
            self.judge = backend.judge(self.judge, cfg.judge)
        self.ref = None
        if cfg.kl_coef > 0:
            import copy

            self.ref = copy.deepcopy(policy).eval()
        self.opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.real_trajectories = 0  # target-task trajectories RL used (online RL only)

    def iteration(self, it: int) -> tuple[dict[str, float], dict[str, Any]]:
        cfg = self.cfg
        rounds, informative = [], 0
        for rnd in range(cfg.sample_rounds):
            rounds.append(self.rollout_round(self.draw(it, rnd)))  # 1-3: rollout, judge, verify
            informative += int(self.advantages(rounds[-1]).informative.sum())
            if informative >= cfg.groups:
                break
        buf = merge_rollouts(rounds)
        a = self.advantages(buf)  # 4
        t0 = time.perf_counter()
        upd = self.update(buf, a.advantages.flatten(), a.mask.flatten(), it)  # 5
        return self.metrics(buf, a, upd, len(rounds), time.perf_counter() - t0), buf

    # -- 1. rollout ---------------------------------------------------------------------------------------
    def draw(self, it: int, rnd: int = 0, states: list[int] | None = None) -> Draw:
        """Round ``rnd`` of iteration ``it``: ``groups`` initial states (another set each round, unless given),
        ``group_size`` rollouts from each; the round's rollouts are numbered after the earlier rounds'."""
        if states is None:
            g = torch.Generator().manual_seed(seeds.rl_states_seed(self.cfg.seed, it, rnd))
            states = torch.randperm(len(self.init), generator=g)[: self.cfg.groups].tolist()
        rows = [s for s in states for _ in range(self.cfg.group_size)]
        return Draw(it, rows, offset=rnd * self.cfg.groups * self.cfg.group_size)

    def rollout_round(self, draw: Draw) -> dict[str, Any]:
        """Phases 1-3 for one draw: the batch of rollouts with each one's reward and reliability."""
        cfg = self.cfg
        buf = self.source(draw)
        if self.source.real:
            self.real_trajectories += len(draw.rows)
        t0 = time.perf_counter()
        success, abstain, scores = self.judge_rollouts(draw, buf)
        t_judge = time.perf_counter() - t0
        t0 = time.perf_counter()
        ver = self.verify_rollouts(draw, buf, success)
        t_verify = time.perf_counter() - t0
        if cfg.diagnose_replay:
            buf["replayed_success"] = self.replayed_success(draw, buf)
        reward = success.astype(np.float32)
        if cfg.reward == "score":  # a verified success is scored by the mean over its noise draws
            reward = np.array(
                [np.mean([scores[i], *ver.scores.get(i, [])]) for i in range(len(reward))], dtype=np.float32
            )
        if cfg.dnv_flip == "failure":
            # the verified reward: a success no redraw confirmed is a failure (0/1: 0; score: its lowest score
            # over the draws, so it ranks with the failures, not below them). A redraw the judge abstained on
            # says nothing about hallucination: that rollout is unreliable, as an abstain on the first draw is
            for i in np.nonzero(ver.flipped & ~ver.abstained)[0]:
                reward[i] = min(scores[i], *ver.scores.get(i, [])) if cfg.reward == "score" else 0.0
            abstain = abstain | ver.abstained
        buf.update(
            {
                "success": success,
                "reward": reward,
                "abstain": abstain,
                "flipped": ver.flipped,
                "scores": scores,
                "second": ver.videos,
                "time": {**buf["time"], "judge": t_judge, "verify": t_verify},
            }
        )
        return buf

    def replayed_success(self, draw: Draw, buf: dict[str, Any]) -> np.ndarray:
        """The simulator's success for each imagined rollout's actions, replayed from its initial state (the
        --diagnose_replay diagnostic; nothing the policy is trained on reads it)."""
        from rawdream.reward.oracle import replay_success

        seeds_ = [self.init[s]["seed"] for s in draw.rows]
        if any(s is None for s in seeds_):
            raise ValueError("--diagnose_replay replays in the simulator: it needs simulator initial states")
        verdicts = replay_success(
            [self.task] * len(seeds_), seeds_, buf["actions"], self.cfg.env, self.cfg.workers, self.backend
        )
        return np.array([v.success is True for v in verdicts])

    # -- 2. judge -----------------------------------------------------------------------------------------
    def judge_rollouts(self, draw: Draw, buf: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(success, abstain, score) per rollout: the judge's verdicts on the videos, or - online RL with the
        simulator's reward - the simulator's own success, exact and never abstaining."""
        if self.judge is None:
            success = buf["true_success"].copy()
            return success, np.zeros(len(success), bool), success.astype(float)
        verdicts = self._judge(list(buf["video"]), self._judge_context(draw, buf), f"iteration {draw.it + 1}")
        return (
            np.array([v.success is True for v in verdicts]),
            np.array([v.success is None for v in verdicts]),
            np.array([verdict_score(v) for v in verdicts]),
        )

    def _judge(self, videos: list[np.ndarray], context: dict[str, Any], where: str) -> list:
        """The judge's verdicts; a batch on which it (mostly) abstains ends the run with the reason."""
        verdicts = self.judge(videos, [self.instruction] * len(videos), **context)
        check_abstains(verdicts, self.cfg.judge, where, getattr(self.judge, "stats", None))
        return verdicts

    def _judge_context(self, draw: Draw, buf: dict[str, Any], idx=None) -> dict[str, Any]:
        """What a privileged judge (the oracle) needs besides the video: where each rollout started and the
        actions to replay there."""
        if self.judge is None or not self.judge.privileged or "actions" not in buf:
            return {}
        idx = range(len(draw.rows)) if idx is None else idx
        return {
            "tasks": [self.task] * len(idx),
            "seeds": [self.init[draw.rows[i]]["seed"] for i in idx],
            "actions": buf["actions"][np.asarray(idx, int)],
        }

    # -- 3. verify ----------------------------------------------------------------------------------------
    def verify_rollouts(self, draw: Draw, buf: dict[str, Any], success: np.ndarray) -> Verification:
        """Dual-noise verification of the judged successes (:func:`rawdream.rl.dnv.verify`)."""
        cfg = self.cfg
        if not (cfg.dnv and self.source.can_redraw):
            return Verification(flipped=np.zeros(len(success), bool))

        def reimagine(idx: np.ndarray, k: int) -> np.ndarray:
            return self.source.redraw(draw, buf["actions"], idx, k, world_model=self.verifier)

        where = "second world model" if cfg.dnv_world_model else "second noise draw"

        def judge_again(videos: np.ndarray, idx: np.ndarray, k: int) -> list:
            context = self._judge_context(draw, buf, idx)
            return self._judge(list(videos), context, f"iteration {draw.it + 1}, {where}")

        return verify(success, cfg.dnv_redraws, reimagine, judge_again, cfg.dnv_threshold)

    # -- 4. advantages ------------------------------------------------------------------------------------
    def reliable(self, buf: dict[str, Any]) -> np.ndarray:
        """Rollouts whose reward counts: not abstained, and not flipped by DNV unless a flip is a failure."""
        if self.cfg.dnv_flip == "failure":
            return ~buf["abstain"]
        return ~(buf["abstain"] | buf["flipped"])

    def advantages(self, buf: dict[str, Any]):
        cfg = self.cfg
        reliable = self.reliable(buf)
        return group_advantages(
            torch.from_numpy(buf["reward"]).view(-1, cfg.group_size),
            torch.from_numpy(reliable).view(-1, cfg.group_size),
            cfg.max_unreliable,
            drop_uninformative=cfg.drop_uninformative,
        )

    # -- 5. update ----------------------------------------------------------------------------------------
    def update(
        self, buf: dict[str, Any], adv: torch.Tensor, roll_mask: torch.Tensor, it: int = 0
    ) -> dict[str, float]:
        cfg = self.cfg
        h, n = buf["alive"].shape
        step_mask = torch.from_numpy(buf["alive"]) & roll_mask[None, :]  # (H, N)
        idx = torch.nonzero(step_mask.flatten()).squeeze(1)
        stats = {
            "loss": 0.0,
            "clip_frac": 0.0,
            "approx_kl": 0.0,
            "entropy": 0.0,
            "grad_norm": 0.0,
            **({"kl_ref": 0.0} if self.ref is not None else {}),  # KL(policy || starting policy) per token
            "updates": 0,
        }
        if len(idx) == 0:  # no rollout carried an advantage: no update, and no loss/entropy to report
            return {"updates": 0}
        images = buf["images"].reshape(h * n, *buf["images"].shape[2:])
        proprio = buf["proprio"].reshape(h * n, -1)
        tokens = buf["tokens"].reshape(h * n, *buf["tokens"].shape[2:])
        old = buf["logp"].reshape(h * n, -1)
        adv_flat = adv[None, :].expand(h, n).reshape(-1)
        # minibatch order from (seed, iteration) only: a float-valued seed (e.g. a sum of log-probabilities)
        # would change with the last bit of arithmetic, so Ray and local, or CPU and GPU, would shuffle apart
        g = torch.Generator().manual_seed(seeds.stable_seed("update", cfg.seed, it))
        self.policy.eval()  # no dropout: the sampled and the re-computed log-probabilities must agree
        for _ in range(cfg.epochs):
            perm = idx[torch.randperm(len(idx), generator=g)]
            for k in range(0, len(perm), cfg.minibatch):
                mb = perm[k : k + cfg.minibatch].numpy()
                obs = {
                    "image": images[mb],
                    "proprio": proprio[mb],
                    "instruction": [self.instruction] * len(mb),
                }
                logp, ent = self.policy.logprob(obs, tokens[mb], cfg.temperature)
                logp = logp.reshape(len(mb), -1)
                loss, info = clipped_surrogate(
                    logp,
                    old[mb].to(logp.device),
                    adv_flat[mb].to(logp.device),
                    torch.ones_like(logp, dtype=torch.bool),
                    cfg.clip_low,
                    cfg.clip_high,
                )
                loss = loss - cfg.entropy_coef * ent.mean()
                if self.ref is not None:
                    with torch.no_grad():
                        ref_logits = self.ref.logits(obs)
                    logits = self.policy.logits(obs)
                    kl = (
                        torch.nn.functional.kl_div(
                            torch.log_softmax(ref_logits, -1),
                            torch.log_softmax(logits, -1),
                            log_target=True,
                            reduction="none",
                        )
                        .sum(-1)
                        .mean()
                    )
                    loss = loss + cfg.kl_coef * kl
                    stats["kl_ref"] += kl.item()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
                self.opt.step()
                stats["loss"] += loss.item()
                stats["clip_frac"] += info["clip_frac"]
                stats["approx_kl"] += info["approx_kl"]
                stats["entropy"] += ent.mean().item()
                stats["grad_norm"] += float(gn)
                stats["updates"] += 1
        for key in ("loss", "clip_frac", "approx_kl", "entropy", "grad_norm", "kl_ref"):
            if key in stats:
                stats[key] /= max(stats["updates"], 1)
        return stats

    def metrics(
        self, buf: dict[str, Any], a, upd: dict[str, float], rounds: int, t_update: float
    ) -> dict[str, float]:
        reliable = self.reliable(buf)
        return {
            "reward_mean": float(buf["reward"].mean()),
            "judged_success_rate": float(buf["success"].mean()),
            **({"true_success_rate": float(buf["true_success"].mean())} if "true_success" in buf else {}),
            **(replay_diagnostics(buf) if "replayed_success" in buf else {}),
            "reliable_fraction": float(reliable.mean()),
            "dnv_flip_rate": float(buf["flipped"].sum() / max(buf["success"].sum(), 1)),
            "dnv_flips": float(buf["flipped"].sum()),
            "dropped_groups": float(a.dropped.sum()),
            "informative_groups": float(a.informative.sum()),
            "sample_rounds": float(rounds),
            "judge_abstains": float(buf["abstain"].sum()),
            "rollouts": float(len(buf["reward"])),
            **{k: float(v) for k, v in upd.items()},
            **{f"time_{k}": float(v) for k, v in buf["time"].items()},
            "time_update": t_update,
            "real_trajectories": float(self.real_trajectories),
        }

    def close(self) -> None:
        self.source.close()


def replay_diagnostics(buf: dict[str, Any]) -> dict[str, float]:
    """How often each kind of imagined rollout truly succeeds (its actions replayed in the simulator): judged
    successes that verification kept and that it flipped, and judged failures (NaN where there are none), with
    the counts."""
    true, success, flipped = buf["replayed_success"], buf["success"], buf["flipped"]
    kinds = {
        "kept": success & ~flipped,
        "flipped": flipped,
        "judged_failure": ~success & ~buf["abstain"],
    }
    out = {"diag/true_rate": float(true.mean())}
    for name, sel in kinds.items():
        out[f"diag/true_rate_{name}"] = float(true[sel].mean()) if sel.any() else float("nan")
        out[f"diag/n_{name}"] = float(sel.sum())
    return out


def save_gallery(
    buf: dict[str, Any], path: Path, k: int, iteration: int, verified_only: bool = False
) -> None:
    """A few imagined rollouts with their verdicts and, for verified ones, the second noise draw (flipped ones
    first: they are what dual-noise verification is for)."""
    if buf.get("video") is None:
        return
    second = sorted(buf["second"], key=lambda i: not buf["flipped"][i])
    if verified_only:
        rows = second[:k]
    else:
        rows = list(range(min(k, len(buf["video"]))))
        rows += [i for i in second if i not in rows][: max(0, k // 2)]
    if not rows:
        return
    second = np.stack([buf["second"].get(i, np.zeros_like(buf["video"][i])) for i in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        video=buf["video"][rows],
        second=second,
        has_second=np.array([i in buf["second"] for i in rows]),
        success=buf["success"][rows],
        flipped=buf["flipped"][rows],
        scores=buf["scores"][rows],
        iteration=np.asarray(iteration),
    )


def dream(
    cfg: DreamConfig,
    policy_path: str | Path,
    out: str | Path,
    wm_path: str | Path | None = None,
    init_from: str | None = None,
    progress: bool = True,
    log_fn=print,
) -> dict[str, Any]:
    with open_backend(cfg.ray) as backend:
        return _dream(cfg, policy_path, out, wm_path, init_from, progress, log_fn, backend)


def _dream(cfg, policy_path, out, wm_path, init_from, progress, log_fn, backend: Backend) -> dict[str, Any]:
    from rawdream.eval.success import evaluate_policy
    from rawdream.io import atomic_write_json
    from rawdream.policy.train import load_policy, save_policy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg = dataclasses.replace(cfg, judge=reading_through(cfg.judge, wm_path))
    save_config(cfg, out)
    dev = resolve_device(cfg.device)
    policy = load_policy(policy_path).to(dev)
    wm = None
    if cfg.env_mode == "wm":
        from rawdream.world_model.train import load_world_model

        wm = load_world_model(wm_path).to(dev) if wm_path else None
    verifier = None
    if cfg.dnv_world_model:
        from rawdream.world_model.train import load_world_model

        verifier = load_world_model(cfg.dnv_world_model).to(dev).eval()
        if cfg.sampler is not None:  # the run's sampler for every draw, the second model's too
            verifier = verifier.with_sampler(overlay_changed(verifier.cfg.sampler, cfg.sampler))
        if wm is not None:
            mine, its = _interface(wm.cfg), _interface(verifier.cfg)
            if mine != its:
                raise ValueError(
                    f"--dnv_world_model {cfg.dnv_world_model} takes {its}, the world model {wm_path} {mine}: it "
                    f"cannot redraw the same actions from the same frames; verify with a model of the same interface"
                )
    dreamer = Dreamer(cfg, policy, wm, init_from, log_fn, backend=backend, verifier=verifier)
    meta = load_checkpoint(out / "ckpt", "dream", policy, dreamer.opt)
    start = meta["step"] if meta else 0
    dreamer.real_trajectories = int(meta.get("real_trajectories", 0)) if meta else 0
    log = MetricsLogger(out)
    log.rewind(start)  # rows of an iteration that was killed before its checkpoint
    ecfgs = {layouts: eval_config(cfg, dreamer, layouts) for layouts in cfg.eval_layouts}
    bar = tqdm(
        total=cfg.iterations,
        initial=start,
        desc=f"dream {dreamer.task} ({cfg.env_mode})",
        disable=not progress,
        dynamic_ncols=True,
    )
    t_start = time.time()
    if cfg.eval_start and cfg.eval_every and start == 0:
        # the starting policy on the same episodes: the final evaluation is paired with it
        for layouts, ecfg in ecfgs.items():
            if ecfg is not None:
                r = evaluate_policy(policy, ecfg, None, progress=False, backend=backend)["tasks"][
                    dreamer.task
                ]
                atomic_write_json(out / f"eval_start_{layouts}.json", r)
    for it in range(start, cfg.iterations):
        metrics, buf = dreamer.iteration(it)
        rows = [({**metrics}, "train")]
        if cfg.eval_every and ((it + 1) % cfg.eval_every == 0 or it + 1 == cfg.iterations):
            values = {}
            for layouts, ecfg in ecfgs.items():
                if ecfg is None:
                    continue
                r = evaluate_policy(policy, ecfg, None, progress=False, backend=backend)["tasks"][
                    dreamer.task
                ]
                if it + 1 == cfg.iterations:
                    atomic_write_json(out / f"eval_{layouts}.json", r)
                values.update(
                    {
                        f"eval/{layouts}/success_rate": r["success_rate"],
                        f"eval/{layouts}/ci_low": r["ci95"][0],
                        f"eval/{layouts}/ci_high": r["ci95"][1],
                    }
                )
            rows.append((values, "eval"))
            save_gallery(buf, out / "gallery" / f"iter_{it + 1:04d}.npz", cfg.gallery, it + 1)
        verified = out / "gallery" / "verified.npz"
        if cfg.gallery and (buf["flipped"].any() or (buf.get("second") and not verified.exists())):
            # the latest dual-noise pairs (a flip when there is one), whatever the evaluation schedule
            save_gallery(buf, verified, cfg.gallery, it + 1, verified_only=True)
        # an iteration is committed by its checkpoint; its metrics rows follow it (a kill in between is trimmed
        # on resume and the iteration, whose random streams depend only on its index, is redone identically)
        save_checkpoint(
            out / "ckpt",
            "dream",
            policy,
            dreamer.opt,
            step=it + 1,
            extra={"real_trajectories": dreamer.real_trajectories},
        )
        for values, stage in rows:
            log.log(it + 1, values, stage=stage)
        bar.update()
        bar.set_postfix(reward=f"{metrics['reward_mean']:.2f}", flips=int(metrics["dnv_flips"]))
    bar.close()
    log.close()
    dreamer.close()
    info = {
        "stage": "dream",
        "env_mode": cfg.env_mode,
        "task": dreamer.task,
        "tasks": [dreamer.task],
        "init": str(Path(policy_path).resolve()),
        # what gave the reward: the judge (in imagination, or on the real video with --sim_reward=judge) or the
        # simulator's own success
        "judge": cfg.judge.backend if cfg.env_mode == "wm" or cfg.sim_reward == "judge" else "simulator",
        "world_model": str(Path(wm_path).resolve()) if wm_path else None,
        "real_trajectories_rl": dreamer.real_trajectories,
        "target_trajectories": policy.info.get("target_trajectories", []) if hasattr(policy, "info") else [],
        "seconds": time.time() - t_start,
        "iterations": cfg.iterations,
        "dnv": cfg.dnv,
        "dnv_world_model": str(Path(cfg.dnv_world_model).resolve()) if cfg.dnv_world_model else None,
        "dnv_sampler": dataclasses.asdict(dreamer.verifier.cfg.sampler)
        if cfg.dnv_sampler is not None
        else None,
        "dnv_flip": cfg.dnv_flip,
        "paired": paired_with_start(out, cfg.eval_layouts),
    }
    save_policy(policy, out, info)
    policy.cpu()
    return info


def _interface(mcfg) -> dict[str, int]:
    """What a world model takes and draws: two models with the same interface can redraw each other's rollouts."""
    d = mcfg.dynamics
    return {
        "image_size": mcfg.image_size,
        "chunk": d.chunk,
        "action_dim": d.action_dim,
        "proprio_dim": d.proprio_dim,
    }


def paired_with_start(out: Path, protocols: list[str]) -> dict[str, Any]:
    """Final minus starting policy on the same evaluation episodes, per protocol (where both were evaluated)."""
    from rawdream.eval.success import paired_difference
    from rawdream.io import read_json

    res = {}
    for layouts in protocols:
        a, b = out / f"eval_{layouts}.json", out / f"eval_start_{layouts}.json"
        if a.exists() and b.exists():
            before, after = read_json(b), read_json(a)
            res[layouts] = {
                "before": before["success_rate"],
                "after": after["success_rate"],
                "episodes": after["episodes"],
                **paired_difference(before["episode_results"], after["episode_results"]),
            }
    return res


def eval_config(cfg: DreamConfig, dreamer: Dreamer, layouts: str):
    """The periodic real-simulator evaluation under one protocol: ``practised`` - the first ``eval_episodes`` of
    the initial states RL trains from (none when they came from a dataset); ``new`` - the evaluation seeds."""
    from rawdream.eval.success import EvalPolicyConfig

    episodes = cfg.eval_episodes
    if layouts == "practised":
        if any(s["seed"] is None for s in dreamer.init):
            return None
        episodes = min(episodes, len(dreamer.init))
    return EvalPolicyConfig(
        split=cfg.split,
        env=cfg.env,
        tasks=[dreamer.task],
        episodes=episodes,
        workers=cfg.workers,
        videos=0,
        layouts=layouts,
    )


def read_metrics(out: str | Path) -> list[dict]:
    from rawdream.io import read_jsonl

    return read_jsonl(Path(out) / "metrics.jsonl")
