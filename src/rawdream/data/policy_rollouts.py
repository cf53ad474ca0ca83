"""Labeled rollouts of a *learned policy* on pretraining tasks: what a judge must learn to read.

A judge trained only on scripted-expert variants (noisy, stalled, poking experts) calls most of a learned policy's
rollouts successes: a policy's near-misses - hovering at the handle, pulling half-way, grasping air - look like
nothing in that data. Here the base policy acts from pretraining-task resets, sampling at the RL temperature for
the RL horizon (episodes do not stop at success, as imagined ones do not), and the simulator labels each rollout.
The dataset has the layout of ``collect labeled`` (one frame per 8-step chunk, ``rawdream/behaviour = "policy"``),
so ``train-judge --data LABELED,POLICY`` reads both. Pretraining tasks only: the guard refuses targets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
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
    batch: int = 16  # rollouts stepped together (env slots)
    workers: int = 2
    episodes_per_file: int = 100
    seed: int = 0

    def validate(self) -> None:
        refuse_episode_length(self.env, "collect policy")

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
    cfg: PolicyRolloutsConfig, policy_path: str | Path, out: str | Path, progress: bool = True
) -> dict[str, Any]:
    """Roll the policy at ``policy_path`` out on each task and write the labeled rollouts to ``out`` (resumable:
    a killed collection skips the tasks already on disk)."""
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.envs.vector import make_vector_env
    from rawdream.policy.train import load_policy

    out = Path(out)
    tasks = cfg.resolved_tasks()
    split = resolve_split(cfg.split)
    policy = load_policy(policy_path)
    chunk = policy.chunk
    fps = catalogue(cfg.env.backend).fps / chunk
    manifest = {
        "kind": "labeled",
        "behaviour": "policy",
        "policy": str(Path(policy_path).resolve()),
        "policy_tasks": policy.info.get("tasks", []),
        "env": cfg.env.backend,
        "frame_stride": chunk,
        "image_size": cfg.env.image_size,
        "split": split.as_dict(),
        "instructions_are_labels": True,
        "collect_config": to_dict(cfg),
    }
    resume = (out / "meta" / "info.json").exists()
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
        if f"policy|{task}|{seeds.POLICY_ROLLOUTS + i}" not in done
    ]
    env_cfg = replace(cfg.env, max_steps=cfg.horizon * chunk, end_on_success=False)
    t0 = time.time()
    successes: dict[str, list[bool]] = {}
    bar = tqdm(total=len(jobs), desc="policy rollouts", unit="ep", disable=not progress, dynamic_ncols=True)
    with writer, make_vector_env(min(cfg.batch, max(len(jobs), 1)), env_cfg, num_workers=cfg.workers) as venv:
        for start in range(0, len(jobs), venv.num_envs):
            batch = jobs[start : start + venv.num_envs]
            n = len(batch)
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
            )
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
                        "rawdream/spec": f"policy|{task}|{seed}",
                        "rawdream/env_task": task,
                        "rawdream/seed": seed,
                        "rawdream/behaviour": "policy",
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
