"""Does what a policy learns in imagination carry to the simulator? Two measures that need no judge.

RL in imagination updates the policy on the frames the world model draws. Even with an exact reward (the oracle
rung of the ladder) the update only carries to the simulator if the policy *decides* on imagined frames as it
decides on real ones. Pixel metrics (PSNR, SSIM) do not say that: a blurred arm costs PSNR and changes nothing
the policy reads, a drawer handle three pixels off costs little PSNR and changes everything. These two do:

1. **policy view** - on the policy's own real rollouts, the world model replays the same actions; at every AR step
   the policy's action-token distributions on the imagined observation (frame and proprioception) are compared
   with those on the real one: mean total-variation distance (0: the policy cannot tell them apart, 1: disjoint)
   and the distance between the greedy actions (action units). The baseline is a world model that draws nothing:
   the first frame with the real proprioception. The imagined frame with the real proprioception splits the
   world model's share in two: what its frames change and what its proprioception changes. A world model whose view is no closer than that baseline teaches
   the policy about frames it will not see.
2. **closed loop** - the policy acts on the world model's frames from the same initial states (as RL in
   imagination does), and its imagined action sequences are replayed in the simulator: their success rate against
   the real closed-loop success rate of the same policy from the same states. Equal rates (and per-state rates that
   agree) mean imagination is where the policy behaves as it does in reality; a lower rate means it behaves worse
   there, and what RL fixes in imagination is partly a problem reality does not have.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def replay(world_model, real: dict[str, np.ndarray], noise_seeds: list[int], objects: bool = False) -> tuple:
    """The world model's replay of the real actions from the real first observation: frames (N, H+1, h, w, 3)
    and proprioception (N, H+1, P), the first of each the real one; with ``objects`` also where a model with an
    object head puts the objects at each chunk's end (N, H, O), or None - the same pass, so
    :func:`object_tracking` need not imagine the replay again."""
    out = _imagine(world_model, real, noise_seeds, decode=True)
    fake, fake_p = out["frames"].numpy(), out["proprio"].numpy()
    fake[:, 0], fake_p[:, 0] = real["video"][:, 0], real["proprio"][:, 0]
    if objects:
        return fake, fake_p, (out["objects"].numpy() if "objects" in out else None)
    return fake, fake_p


def _imagine(world_model, real: dict[str, np.ndarray], noise_seeds: list[int], decode: bool) -> dict:
    # only models with an object head are asked not to decode (any world model's rollout draws frames)
    return world_model.rollout(
        torch.from_numpy(np.asarray(real["video"][:, 0], np.uint8)),
        torch.from_numpy(np.asarray(real["proprio"][:, 0], np.float32)),
        torch.from_numpy(np.asarray(real["actions"], np.float32)),
        seeds=[int(s) for s in noise_seeds],
        **({} if decode else {"decode": False}),
    )


@torch.no_grad()
def policy_view(
    policy,
    imagined: tuple[np.ndarray, np.ndarray],
    real: dict[str, np.ndarray],
    instruction: str,
    temperature: float,
) -> dict[str, list[float]]:
    """Per AR step 0..H-1: the policy's token distributions on imagined vs real observations of the same actions.
    ``imagined`` is :func:`replay`'s (frames, proprio); ``real`` is
    :func:`rawdream.eval.on_policy.policy_rollouts`' dict (``video`` (N, H+1, h, w, 3), ``proprio`` (N, H+1, P),
    ``actions`` (N, H, chunk, A)). Also the imagined hand's distance from the real one per step 0..H (``hand_err``,
    the proprioception's first three dimensions, the end effector's position in both simulators)."""
    fake, fake_p = imagined
    n, horizon = real["actions"].shape[:2]
    texts = [instruction] * n
    t = temperature if temperature > 0 else 1.0
    policy.eval()

    def distribution(images, proprio) -> tuple[torch.Tensor, np.ndarray]:
        logits = policy.logits({"image": images, "proprio": proprio, "instruction": texts}).float().cpu()
        greedy = policy.tokenizer.decode(logits.argmax(-1)).numpy()
        return F.softmax(logits / t, dim=-1), greedy

    keys = ("tv", "tv_frames", "tv_copy", "action_gap", "action_gap_frames", "action_gap_copy")
    res: dict[str, list[float]] = {k: [] for k in keys}
    for h in range(horizon):
        p_real, a_real = distribution(real["video"][:, h], real["proprio"][:, h])
        p_wm, a_wm = distribution(fake[:, h], fake_p[:, h])
        p_frames, a_frames = distribution(fake[:, h], real["proprio"][:, h])
        p_copy, a_copy = distribution(real["video"][:, 0], real["proprio"][:, h])
        for name, p, a in (("", p_wm, a_wm), ("_frames", p_frames, a_frames), ("_copy", p_copy, a_copy)):
            res["tv" + name].append(float(0.5 * (p - p_real).abs().sum(-1).mean()))
            res["action_gap" + name].append(float(np.abs(a - a_real).mean()))
    # over all H + 1 observations: the last imagined hand is the one after the final chunk
    res["hand_err"] = np.linalg.norm(fake_p[..., :3] - real["proprio"][..., :3], axis=-1).mean(0).tolist()
    return res


@torch.no_grad()
def hand_drift(world_model, real: dict[str, np.ndarray], noise_seeds: list[int]) -> dict[str, list[float]]:
    """Why the imagined hand drifts, per AR step 1..H (distance from the real hand, proprioception units):
    ``teacher_forced``: one step from the real context frames and the real hand (the model's error per step);
    ``own_hand``: the real context frames but the model's own hand estimate fed back (what its proprioception
    adds by compounding, when the frames are right). The open-loop error is :func:`policy_view`'s ``hand_err``.
    A model whose ``own_hand`` error grows far past ``teacher_forced`` integrates its own estimate instead of
    reading the hand from the frames it is given."""
    wm = world_model
    video = torch.from_numpy(np.asarray(real["video"], np.uint8))
    hand = torch.from_numpy(np.asarray(real["proprio"], np.float32))
    actions = torch.from_numpy(np.asarray(real["actions"], np.float32))
    horizon = actions.shape[1]
    z = torch.stack([wm.encode(video[:, h]) for h in range(horizon + 1)], dim=1)
    p_real = wm.norm_proprio(hand.to(wm.device))
    k = wm.cfg.dynamics.context

    def step(h: int, p_in: torch.Tensor) -> torch.Tensor:
        # the real latents of steps h-k+1..h, the first repeated before the start (as a rollout begins)
        ctx = z[:, [max(0, j) for j in range(h - k + 1, h + 1)]]
        gens = [torch.Generator().manual_seed(int(s)) for s in noise_seeds]
        _, p = wm.predict_next(ctx, z[:, 0], wm.norm_actions(actions[:, h].to(wm.device)), p_in, h + 1, gens)
        return p

    def err(p: torch.Tensor, h: int) -> float:
        return float((wm.denorm_proprio(p)[:, :3].cpu() - hand[:, h, :3]).norm(dim=-1).mean())

    res: dict[str, list[float]] = {"teacher_forced": [], "own_hand": []}
    own = p_real[:, 0]
    for h in range(horizon):
        res["teacher_forced"].append(err(step(h, p_real[:, h]), h + 1))
        own = step(h, own)
        res["own_hand"].append(err(own, h + 1))
    return res


@torch.no_grad()
def object_tracking(
    world_model, real: dict[str, np.ndarray], noise_seeds: list[int], head: np.ndarray | None = None
) -> dict[str, Any]:
    """Does the world model know where the policy's actions moved the object? For a model with an object head
    (``--model.dynamics.object_head``): its main object (the first slot, the simulator's ``object_position``)
    along the replay of the real actions against the real one - the error per AR step 1..H (metres), and along
    the axis the object moves most, the final displacement on the rollouts that succeeded and on those that did
    not, real and as the head has it, with their correlation. A model that moves the object as far on failures
    as on successes draws successes that did not happen, whatever judge reads its frames. ``head``: the objects
    of :func:`replay` with these ``noise_seeds``, if the caller has them."""
    if head is None:
        head = _imagine(world_model, real, noise_seeds, decode=False)["objects"].numpy()
    head = head[:, :, :3]  # (N, H, 3) at each chunk's end
    pos = np.asarray(real["object_position"], np.float32)  # (N, H+1, 3)
    success = np.asarray(real["success"], bool)
    moved_real, moved_head = pos[:, -1] - pos[:, 0], head[:, -1] - pos[:, 0]
    axis = int(np.argmax(np.abs(moved_real).mean(0)))

    def split(d: np.ndarray) -> dict[str, float | None]:
        return {
            k: float(d[m, axis].mean()) if m.any() else None
            for k, m in (("success", success), ("failure", ~success))
        }

    r, h = moved_real[:, axis], moved_head[:, axis]
    return {
        "error": np.linalg.norm(head - pos[:, 1:], axis=-1).mean(0).tolist(),
        "axis": axis,
        "real_displacement": split(moved_real),
        "head_displacement": split(moved_head),
        "correlation": float(np.corrcoef(r, h)[0, 1]) if r.std() > 0 and h.std() > 0 else None,
    }


def closed_loop(
    policy,
    world_model,
    task: str,
    real: dict[str, np.ndarray],
    instruction: str,
    temperature: float,
    policy_seeds: list[int],
    noise_seeds: list[int],
    env_cfg,
    workers: int = 2,
    judge_fn=None,
    noise: str = "token",
) -> dict[str, Any]:
    """The policy in imagination from the real rollouts' first observations; its actions replayed in the simulator
    from the same seeded resets. Per-state success rates of both, where ``real["init_seed"]`` names the state.
    ``judge_fn(videos, actions) -> verdicts``: also the judge's verdict on each imagined rollout against the
    simulator's success of its actions - the reward RL in imagination is given, where the on-policy fidelity
    judges replays of the policy's *real* actions."""
    from rawdream.reward.oracle import replay_success
    from rawdream.rl.imagination import imagine_rollouts

    n, horizon = real["actions"].shape[:2]
    buf = imagine_rollouts(
        policy,
        world_model,
        np.asarray(real["video"][:, 0], np.uint8),
        np.asarray(real["proprio"][:, 0], np.float32),
        instruction,
        horizon,
        temperature,
        policy_seeds,
        noise_seeds,
        noise=noise,
    )
    init = [int(s) for s in real["init_seed"]]
    verdicts = replay_success([task] * n, init, buf["actions"], env_cfg, workers)
    imagined = np.array([bool(v.success) for v in verdicts])
    truth = np.asarray(real["success"], bool)
    states = sorted(set(init))
    per_real = np.array([truth[[i for i in range(n) if init[i] == s]].mean() for s in states])
    per_imag = np.array([imagined[[i for i in range(n) if init[i] == s]].mean() for s in states])
    corr = (
        float(np.corrcoef(per_real, per_imag)[0, 1])
        if len(states) > 1 and per_real.std() > 0 and per_imag.std() > 0
        else float("nan")
    )
    judged = {}
    if judge_fn is not None:
        from rawdream.eval.metrics import binary_metrics, cohen_kappa, verdict_arrays

        scores, yes = verdict_arrays(judge_fn(list(buf["video"]), buf["actions"]))
        judged = {
            "judge": {
                "judged_success_rate": float(yes.mean()),
                "kappa_with_replayed_success": cohen_kappa(yes, imagined),
                **binary_metrics(scores, imagined, predicted=yes),
            }
        }
    return {
        "rollouts": n,
        "states": len(states),
        "real_success_rate": float(truth.mean()),
        "imagined_policy_success_rate": float(imagined.mean()),
        **judged,
        # how the states rank: does imagination find the same layouts hard as the simulator does?
        "per_state_correlation": corr,
        "per_state_abs_gap": float(np.abs(per_real - per_imag).mean()),
    }


def format_transfer(rep: dict[str, Any]) -> str:
    view, loop = rep["policy_view"], rep["closed_loop"]

    def mean(key: str) -> str:
        return f"{np.mean(view[key][1:]):.3f}"

    return (
        f"  policy view, imagined vs real observations over steps 1..{len(view['tv']) - 1} (world model / its "
        f"frames with the real proprioception / the first frame with the real proprioception): token TV "
        f"{mean('tv')} / {mean('tv_frames')} / {mean('tv_copy')}; greedy action gap {mean('action_gap')} / "
        f"{mean('action_gap_frames')} / {mean('action_gap_copy')}; imagined hand off by "
        f"{view['hand_err'][1]:.3f} after one chunk, {view['hand_err'][-1]:.3f} after {len(view['hand_err']) - 1}"
        + (
            f" (from the real frames and its own hand estimate {rep['hand_drift']['own_hand'][-1]:.3f}; "
            f"one step from the real ones, mean {np.mean(rep['hand_drift']['teacher_forced']):.3f})"
            if "hand_drift" in rep
            else ""
        )
        + "\n"
        + (_format_objects(rep["object_tracking"]) if "object_tracking" in rep else "")
        + f"  closed loop: the policy acting in imagination succeeds (actions replayed in the simulator) "
        f"{loop['imagined_policy_success_rate']:.2f} vs {loop['real_success_rate']:.2f} acting in the simulator; "
        f"per-state correlation {loop['per_state_correlation']:.2f}"
        + (
            f"\n  closed loop, the reward RL sees: the judge calls {loop['judge']['judged_success_rate']:.2f} of "
            f"those imagined rollouts successes (their actions succeed {loop['imagined_policy_success_rate']:.2f} "
            f"in the simulator); AUROC {loop['judge']['auroc']:.2f}, kappa "
            f"{loop['judge']['kappa_with_replayed_success']:.2f}"
            if "judge" in loop
            else ""
        )
    )


def _format_objects(obj: dict[str, Any]) -> str:
    def cm(v):
        return "-" if v is None else f"{100 * v:.1f}"

    real, head = obj["real_displacement"], obj["head_displacement"]
    corr = "-" if obj["correlation"] is None else f"{obj['correlation']:.2f}"
    return (
        f"  objects (the world model's object head): main object off by {cm(obj['error'][0])} cm after one chunk, "
        f"{cm(obj['error'][-1])} cm after {len(obj['error'])}; moved (cm, axis {obj['axis']}) on successes real "
        f"{cm(real['success'])} / head {cm(head['success'])}, on failures real {cm(real['failure'])} / head "
        f"{cm(head['failure'])}; correlation {corr}\n"
    )


def imagination_transfer(
    policy,
    world_model,
    task: str,
    cfg,
    real: dict[str, np.ndarray] | None = None,
    imagined: tuple[np.ndarray, np.ndarray] | None = None,
    judge_fn=None,
) -> dict:
    """Both measures for one target task on the policy's own sampled rollouts from the RL initial states.
    ``cfg`` is a :class:`rawdream.eval.on_policy.RewardFidelityConfig`; ``real`` its rollouts and ``imagined``
    the world model's :func:`replay` of them, if the caller already has them (eval-judge's on-policy fidelity
    does, and passes its judge as ``judge_fn``: :func:`closed_loop`)."""
    from rawdream import seeds
    from rawdream.envs.tasks import canonical_task, instruction
    from rawdream.eval.on_policy import policy_rollouts

    task = canonical_task(task)
    if real is None:
        real = policy_rollouts(policy, task, cfg)
    n = len(real["success"])
    text = instruction(task)
    noise = [seeds.stable_seed("imagination-transfer-noise", task, cfg.seed, i) for i in range(n)]
    sampling = [seeds.stable_seed("imagination-transfer-policy", task, cfg.seed, i) for i in range(n)]
    head = None  # the object head's replay of these seeds, when this function imagines the replay itself
    if imagined is None:
        *imagined, head = replay(world_model, real, noise, objects=True)
    return {
        "task": task,
        "temperature": cfg.temperature,
        "horizon": cfg.horizon,
        "policy_view": policy_view(
            policy,
            tuple(imagined),
            real,
            text,
            cfg.temperature,
        ),
        "hand_drift": hand_drift(world_model, real, noise),
        **(
            {"object_tracking": object_tracking(world_model, real, noise, head)}
            if getattr(world_model, "has_objects", False)
            else {}
        ),
        "closed_loop": closed_loop(
            policy,
            world_model,
            task,
            real,
            text,
            cfg.temperature,
            sampling,
            noise,
            cfg.env,
            cfg.workers,
            judge_fn,
            cfg.exploration,
        ),
    }
