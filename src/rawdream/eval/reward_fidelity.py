"""On-policy reward fidelity: is the reward RL in imagination optimises the success the simulator measures?

The judge is scored elsewhere on labeled rollouts of scripted experts (:mod:`rawdream.eval.judge_accuracy`);
RL, however, rewards *the policy's own* rollouts, imagined by the world model. This diagnostic measures exactly
that link, for one target task:

1. the policy acts in the real simulator from the RL initial states (seeds ``DREAM_INIT + i``, never evaluation
   seeds), sampling at the RL temperature, for the RL horizon (episodes do not stop at success, as imagined ones
   do not); the simulator says whether each reached success at any step - the ground truth;
2. the world model replays the same actions from the same first frames (one noise seed per rollout), and a
   second time under fresh seeds - the two draws of dual-noise verification;
3. the judge scores the real videos, the imagined videos, and the kept imagined successes after DNV.

Read it as: AUROC / precision of "judge on imagined" is the reward RL sees; "after DNV" is what enters the loss.
If imagined precision is near the base rate, RL in imagination has no signal on this task, whatever else works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rawdream import seeds
from rawdream.envs.tasks import canonical_task, instruction
from rawdream.eval.metrics import binary_metrics, cohen_kappa, verdict_arrays
from rawdream.eval.on_policy import RewardFidelityConfig, policy_rollouts
from rawdream.io import atomic_write_json
from rawdream.reward.base import JudgeConfig, check_abstains, make_judge, probe_judge
from rawdream.rl.dnv import verify
from rawdream.rl.imagination import reimagine


def reward_fidelity(
    policy,
    world_model,
    cfg: RewardFidelityConfig,
    task: str,
    judge_cfg: JudgeConfig,
    out: str | Path | None = None,
) -> dict[str, Any]:
    task = canonical_task(task)
    real = policy_rollouts(policy, task, cfg)
    n = len(real["success"])
    from rawdream.eval.imagination_transfer import imagination_transfer, replay

    noise = [
        [seeds.stable_seed("reward-fidelity-noise", task, cfg.seed, k, i) for i in range(n)] for k in range(2)
    ]
    # the two independent noise draws of dual-noise verification, replaying the real actions; the first keeps
    # its proprioception for the policy's view of it
    first = replay(world_model, real, noise[0])
    draws = [
        first[0],
        reimagine(world_model, real["video"][:, 0], real["proprio"][:, 0], real["actions"], noise[1]),
    ]
    judge = make_judge(judge_cfg, purpose="evaluation")
    probe_judge(judge)
    text = [instruction(task)] * n
    context = {"tasks": [task] * n, "seeds": real["init_seed"].tolist(), "actions": real["actions"]}

    def verdicts_of(videos) -> list:
        verdicts = judge(list(videos), text, **(context if judge.privileged else {}))
        check_abstains(verdicts, judge_cfg, f"on-policy fidelity of {task}", getattr(judge, "stats", None))
        return verdicts

    s_real, y_real = verdict_arrays(verdicts_of(real["video"]))
    s_im, y_im = verdict_arrays(verdicts_of(draws[0]))
    # the second draw is judged for every rollout (a measurement: flips of failures into successes show too);
    # DNV itself only consults it for the judged successes, as in RL
    second = verdicts_of(draws[1])
    ver = verify(y_im, 1, lambda idx, k: draws[1][idx], lambda videos, idx, k: [second[i] for i in idx])
    kept = ver.kept(y_im)
    truth = real["success"]
    thr = judge_cfg.threshold

    def rates(pred: np.ndarray) -> dict[str, float]:
        tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
        return {
            "predicted_successes": int(pred.sum()),
            "precision": tp / max(tp + fp, 1),
            "recall": tp / max(int(truth.sum()), 1),
            "true_positives": tp,
            "false_positives": fp,
        }

    flips = ver.flipped
    from rawdream.eval.wm_fidelity import replay_fidelity

    frames_fidelity = replay_fidelity(
        real["video"], draws[0], real["masks"], real["object_position"], cfg.moved_threshold
    )
    report = {
        "task": task,
        "rollouts": n,
        "temperature": cfg.temperature,
        "horizon": cfg.horizon,
        "real_success_rate": float(truth.mean()),
        "judge_on_real": binary_metrics(s_real, truth, thr, predicted=y_real),
        "judge_on_imagined": binary_metrics(s_im, truth, thr, predicted=y_im),
        # the verdict on imagined video against the verdict on the real video of the same actions: a world model
        # that hallucinates success (or hides it) shows here and in the judged rates, whatever the AUROCs say
        "verdict_agreement": {
            "rate": float((y_real == y_im).mean()),
            "kappa": cohen_kappa(y_real, y_im),
        },
        "judged_success_rate": {"real": float(y_real.mean()), "imagined": float(y_im.mean())},
        "imagined_before_dnv": rates(y_im),
        "imagined_after_dnv": rates(kept),
        "dnv_flips": {
            "of_real_successes": int((flips & truth).sum()),
            "of_real_failures": int((flips & ~truth).sum()),
        },
        # the replays of the policy's own actions against the real frames, per AR step, vs copy-the-first-frame
        "frames": frames_fidelity,
    }
    if cfg.transfer:

        def closed_loop_verdicts(videos, actions) -> list:
            # a privileged judge (the oracle) replays the actions the policy took in imagination, not the real ones
            own = {**context, "actions": actions} if judge.privileged else {}
            verdicts = judge(list(videos), text, **own)
            check_abstains(
                verdicts, judge_cfg, f"closed-loop fidelity of {task}", getattr(judge, "stats", None)
            )
            return verdicts

        report["imagination_transfer"] = imagination_transfer(
            policy, world_model, task, cfg, real, first, judge_fn=closed_loop_verdicts
        )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / f"reward_fidelity_{task}.json", report)
    return report


def _frames_line(rep: dict[str, Any]) -> str:
    f = rep.get("frames")
    if not f:
        return ""
    return (
        f"  replays vs real, last step (WM / copy-first-frame): SSIM {f['ssim'][-1]:.3f} / {f['ssim_copy'][-1]:.3f}"
        f"  object SSIM {f['object_ssim'][-1]:.3f} / {f['object_ssim_copy'][-1]:.3f}"
        f"  object PSNR {f['object_psnr'][-1]:.2f} / {f['object_psnr_copy'][-1]:.2f}"
        f" ({f['object_moved_episodes'][-1]} rollouts moved an object)\n"
    )


def format_reward_fidelity(rep: dict[str, Any]) -> str:
    r, im = rep["judge_on_real"], rep["judge_on_imagined"]
    b, a = rep["imagined_before_dnv"], rep["imagined_after_dnv"]
    return (
        f"{rep['task']}: {rep['rollouts']} on-policy rollouts (T={rep['temperature']}), real success "
        f"{rep['real_success_rate']:.2f}\n"
        f"  judge on real videos:     AUROC {r['auroc']:.2f}  balanced acc {r['balanced_accuracy']:.2f}  "
        f"precision {r['precision']:.2f}  recall {r['recall']:.2f}\n"
        f"  judge on imagined videos: AUROC {im['auroc']:.2f}  balanced acc {im['balanced_accuracy']:.2f}  "
        f"precision {b['precision']:.2f}  recall {b['recall']:.2f}  ({b['predicted_successes']} judged successes)\n"
        f"  verdicts imagined vs real: agreement {rep['verdict_agreement']['rate']:.2f}  kappa "
        f"{rep['verdict_agreement']['kappa']:.2f}; judged success rate real {rep['judged_success_rate']['real']:.2f}"
        f"  imagined {rep['judged_success_rate']['imagined']:.2f}\n"
        + _frames_line(rep)
        + f"  after dual-noise verification: precision {a['precision']:.2f}  recall {a['recall']:.2f}  "
        f"({a['predicted_successes']} kept; flips: {rep['dnv_flips']['of_real_failures']} real failures, "
        f"{rep['dnv_flips']['of_real_successes']} real successes)" + _transfer_lines(rep)
    )


def _transfer_lines(rep: dict[str, Any]) -> str:
    if not rep.get("imagination_transfer"):
        return ""
    from rawdream.eval.imagination_transfer import format_transfer

    return "\n" + format_transfer(rep["imagination_transfer"])
