"""Labeled rollouts of a *learned policy* on pretraining tasks: what a judge must learn to read.

A judge trained only on scripted-expert variants (noisy, stalled, poking experts) calls most of a learned policy's
rollouts successes: a policy's near-misses - hovering at the handle, pulling half-way, grasping air - look like
nothing in that data. Here the base policy acts from pretraining-task resets, sampling at the RL temperature for
the RL horizon (episodes do not stop at success, as imagined ones do not), and the simulator labels each rollout.
The dataset has the layout of ``collect labeled`` (one frame per 8-step chunk, ``rawdream/behaviour = "policy"``),
so ``train-judge --data LABELED,POLICY`` reads both. Pretraining tasks only: the guard refuses targets.

With a world model (``collect policy --wm``) the policy acts *inside* it, from the real reset frames, as RL in
imagination does, and the video is what the world model drew; the simulator replays the imagined actions from the
same resets and labels them (``rawdream/imagined`` true, states and success from the replay). That is the reward's
input distribution in RAW-Dream - the closed-loop row of ``eval-judge --policy --wm`` measures a judge on it for the
targets - drawn here on pretraining tasks, so a judge can learn to read it without target data.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from rawdream import seeds
from rawdream.config import to_dict
from rawdream.data.collect import episode_features
from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotWriter
from rawdream.data.video import VideoConfig
from rawdream.envs.base import EnvConfig, refuse_episode_length
from rawdream.envs.tasks import canonical_task, catalogue, instruction
from rawdream.policy.base import check_exploration
from rawdream.rl.rollouts import simulate
from rawdream.splits import SplitConfig, TargetTaskLeakError, resolve_split


@dataclass
class PolicyRolloutsConfig:
    RANGES: ClassVar[dict] = {
        "episodes_per_task": ">=1",
        "horizon": ">=1",
        "temperature": (">0", "the RL temperature: sampled, as RL's rollouts are"),
        "batch": ">=1",
        "workers": (">=0", "0 or 1: in this process"),
        "episodes_per_file": ">=1",
    }

    split: SplitConfig = field(default_factory=SplitConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    tasks: list[str] = field(default_factory=list)  # empty: the split's pretraining tasks
    episodes_per_task: int = 8
    horizon: int = 16  # action chunks per rollout: the RL horizon
    temperature: float = 1.0  # the RL rollout temperature
    # how action tokens are drawn: "token" independently (the default of this dataset's first use), "chunk" as
    # dream's recipe H draws them - the behaviour RL shows a judge
    exploration: str = "token"
    batch: int = 16  # rollouts stepped together (env slots)
    workers: int = 2
    episodes_per_file: int = 100
    seed: int = 0

    def validate(self) -> None:
        refuse_episode_length(self.env, "collect policy")
        check_exploration(self.exploration)

    def resolved_tasks(self) -> list[str]:
        split = resolve_split(self.split)
        tasks = [canonical_task(t) for t in self.tasks] or list(split.pretrain)
        leaked = [t for t in tasks if t in split.targets]
        if leaked:
            raise TargetTaskLeakError(
                f"policy rollouts are judge training data: {', '.join(leaked)} are held-out targets of split "
                f"{split.name!r}; use pretraining tasks only"
            )
        return tasks


def collect_policy_rollouts(
    cfg: PolicyRolloutsConfig,
    policy_path: str | Path,
    out: str | Path,
    progress: bool = True,
    wm_path: str | Path | None = None,
) -> dict[str, Any]:
    """Roll the policy at ``policy_path`` out on each task and write the labeled rollouts to ``out`` (resumable:
    a killed collection skips the tasks already on disk). With ``wm_path`` the policy acts in that world model
    and the simulator labels its imagined actions (module docstring)."""
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.envs.vector import make_vector_env
    from rawdream.policy.train import load_policy

    out = Path(out)
    tasks = cfg.resolved_tasks()
    split = resolve_split(cfg.split)
    policy = load_policy(policy_path)
    wm = None
    if wm_path is not None:
        from rawdream.world_model.train import load_world_model

        wm = load_world_model(wm_path).eval()
    behaviour = "policy" if wm is None else "policy_imagined"
    chunk = policy.chunk
    fps = catalogue(cfg.env.backend).fps / chunk
    manifest = {
        "kind": "labeled",
        "behaviour": behaviour,
        "imagined": wm is not None,
        "world_model": None if wm_path is None else str(Path(wm_path).resolve()),
        "policy": str(Path(policy_path).resolve()),
        "policy_tasks": policy.info.get("tasks", []),
        "env": cfg.env.backend,
        "frame_stride": chunk,
        "image_size": cfg.env.image_size,
        "camera": asdict(cfg.env.camera),
        "split": split.as_dict(),
        "instructions_are_labels": True,
        "collect_config": to_dict(cfg),
    }
    resume = (out / "meta" / "info.json").exists()
    if resume:
        had = LeRobotDataset(out).manifest
        if had.get("behaviour", "policy") != behaviour:
            raise ValueError(
                f"{out} holds {had.get('behaviour', 'policy')} rollouts; these would be {behaviour} ones - "
                f"{'drop --wm' if wm is not None else 'pass the --wm it was collected with'} or choose another --out"
            )
        if had.get("world_model") != manifest["world_model"]:
            raise ValueError(
                f"{out} was imagined in {had.get('world_model')}, not {manifest['world_model']}; resume with that "
                f"--wm or choose another --out"
            )
    writer = LeRobotWriter(
        out,
        fps=fps,
        features=episode_features(cfg.env.backend, cfg.env.image_size, fps, cfg.video, chunk),
        robot_type=catalogue(cfg.env.backend).robot,
        manifest=manifest,
        episodes_per_file=cfg.episodes_per_file,
        video=cfg.video,
        resume=resume,
    )
    done = writer.committed_keys()
    jobs = [
        (task, seeds.POLICY_ROLLOUTS + i)
        for task in tasks
        for i in range(cfg.episodes_per_task)
        if f"{behaviour}|{task}|{seeds.POLICY_ROLLOUTS + i}" not in done
    ]
    env_cfg = replace(cfg.env, max_steps=cfg.horizon * chunk, end_on_success=False)
    t0 = time.time()
    successes: dict[str, list[bool]] = {}
    bar = tqdm(total=len(jobs), desc="policy rollouts", unit="ep", disable=not progress, dynamic_ncols=True)
    with writer, make_vector_env(min(cfg.batch, max(len(jobs), 1)), env_cfg, num_workers=cfg.workers) as venv:
        for batch in _batches(jobs, venv.num_envs, same_task=wm is not None):
            n = len(batch)
            if wm is None:
                # one sampling stream per rollout: its actions do not depend on the batch it shares
                gens = [
                    torch.Generator().manual_seed(seeds.stable_seed("policy-rollouts", cfg.seed, t, s))
                    for t, s in batch
                ]
                buf = simulate(
                    policy,
                    venv,
                    batch,
                    [instruction(t) for t, _ in batch],
                    cfg.horizon,
                    cfg.temperature,
                    gens,
                    end_at_success=False,
                    noise=cfg.exploration,
                )
            else:
                buf = imagine_and_replay(policy, wm, venv, batch, cfg)
            for i, (task, seed) in enumerate(batch):
                ok = buf["chunk_success"][i]
                # the last frame has no action after it (the LeRobot row still needs one)
                act = np.concatenate([buf["actions"][i], np.zeros_like(buf["actions"][i][:1])])
                done_flags = np.zeros(cfg.horizon + 1, bool)
                done_flags[-1] = True
                writer.add_episode(
                    {DEFAULT_IMAGE_KEY: buf["video"][i].astype(np.uint8)},
                    {
                        "observation.state": buf["proprio_video"][i].astype(np.float32),
                        "observation.environment_state": buf["state"][i].astype(np.float32),
                        "action": act.astype(np.float32),
                        "next.reward": np.append(buf["reward"][i], 0.0).astype(np.float32),
                        "next.success": np.append(ok, False),
                        "next.done": done_flags,
                    },
                    task=instruction(task),
                    extra={
                        "rawdream/spec": f"{behaviour}|{task}|{seed}",
                        "rawdream/env_task": task,
                        "rawdream/seed": seed,
                        "rawdream/behaviour": behaviour,
                        # only on imagined episodes: a dataset collected before the flag existed resumes as it was
                        **({"rawdream/imagined": True} if wm is not None else {}),
                        "rawdream/sigma": float(cfg.temperature),
                        "rawdream/success": bool(ok.any()),
                        "rawdream/labelled": True,
                        "rawdream/success_step": int((np.argmax(ok) + 1) * chunk) if ok.any() else -1,
                    },
                )
                successes.setdefault(task, []).append(bool(ok.any()))
            bar.update(n)
    bar.close()
    ds = LeRobotDataset(out)
    rates = {}
    for task, ok in zip(ds.episodes["rawdream/env_task"], ds.episodes["rawdream/success"]):
        rates.setdefault(str(task), []).append(bool(ok))
    return {
        "out": str(out),
        "episodes": ds.num_episodes,
        "new_episodes": len(jobs),
        "seconds": time.time() - t0,
        "success_rate": {t: float(np.mean(v)) for t, v in sorted(rates.items())},
        "mean_success_rate": float(np.mean([np.mean(v) for v in rates.values()])) if rates else float("nan"),
    }


def _batches(jobs: list[tuple[str, int]], size: int, same_task: bool):
    """Consecutive jobs in batches of ``size``; with ``same_task`` a batch never mixes tasks (imagination takes
    one instruction per batch)."""
    start = 0
    while start < len(jobs):
        stop = min(start + size, len(jobs))
        if same_task:
            stop = next((k for k in range(start + 1, stop) if jobs[k][0] != jobs[start][0]), stop)
        yield jobs[start:stop]
        start = stop


def imagine_and_replay(policy, world_model, venv, batch: list[tuple[str, int]], cfg: PolicyRolloutsConfig):
    """The policy in the world model from the real resets of ``batch`` (one task), its imagined actions replayed in
    the simulator from the same resets: :func:`rawdream.rl.rollouts.simulate`'s per-rollout arrays with the
    imagined ``video`` and the replay's proprioception, states, rewards and per-chunk success."""
    from rawdream.rl.imagination import imagine_rollouts

    task = batch[0][0]
    slots = list(range(len(batch)))
    resets = venv.reset([s for _, s in batch], [t for t, _ in batch], slots=slots)
    proprio = np.stack([o["proprio"] for o, _ in resets]).astype(np.float32)
    buf = imagine_rollouts(
        policy,
        world_model,
        np.stack([o["image"] for o, _ in resets]),
        proprio,
        instruction(task),
        cfg.horizon,
        cfg.temperature,
        [seeds.stable_seed("policy-imagined-sampling", cfg.seed, t, s) for t, s in batch],
        [seeds.stable_seed("policy-imagined-noise", cfg.seed, t, s) for t, s in batch],
        noise=cfg.exploration,
    )
    track = {
        "proprio_video": [proprio],
        "state": [np.stack([info["state"] for _, info in resets])],
        "reward": [],
        "chunk_success": [],
    }
    for h in range(cfg.horizon):  # the env stands at the resets: imagination took no real step
        res = venv.step_chunk(np.asarray(buf["actions"][:, h]), slots=slots)
        track["proprio_video"].append(np.stack([r.obs["proprio"] for r in res]))
        track["state"].append(np.stack([r.state for r in res]))
        track["reward"].append(np.array([r.reward for r in res], np.float32))
        track["chunk_success"].append(np.array([r.success for r in res], bool))
    out = {key: np.stack(x, 1) for key, x in track.items()}
    out["video"] = np.asarray(buf["video"])
    out["actions"] = np.asarray(buf["actions"])
    return out
