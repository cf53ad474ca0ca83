"""The embedded generalist judge: counterfactual sibling labels, training, calibration, and the eval-judge table."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from rawdream.eval.judge_accuracy import auroc, binary_metrics
from rawdream.reward.base import FrameSelection, judge_config, make_judge
from rawdream.reward.generalist import judge_examples
from rawdream.reward.siblings import siblings
from rawdream.splits import resolve_split


def test_auroc_and_metrics_by_hand():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    m = binary_metrics(np.array([0.9, 0.8, 0.2, 0.7]), np.array([1, 0, 0, 1]))
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 0, "tn": 1}
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx(0.75) and m["f1_always_success"] == pytest.approx(2 / 3)


def test_abstains_are_left_out_of_judge_metrics_and_counted():
    from rawdream.eval.judge_accuracy import judge_metrics
    from rawdream.reward.base import Verdict

    verdicts = [
        Verdict(success=True, score=0.9),
        Verdict(success=None),
        Verdict(success=False, score=0.2),
        Verdict(success=None),
        Verdict(success=False),
    ]
    m = judge_metrics(verdicts, ["a", "a", "a", "b", "b"], np.array([1, 0, 0, 1, 1]), ["a", "b", "c"], 0.5)
    assert set(m) == {"a", "b"}
    assert (
        m["a"]["abstains"] == 1
        and m["a"]["n"] == 2
        and m["a"]["confusion"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 1}
    )
    assert m["b"]["abstains"] == 1 and m["b"]["confusion"] == {"tp": 0, "fp": 0, "fn": 1, "tn": 0}
    # the metrics are of the verdicts, not of score >= 0.5: a judge calibrated per task says success at 0.3
    calibrated = [Verdict(success=True, score=0.3), Verdict(success=False, score=0.1)]
    m = judge_metrics(calibrated, ["a", "a"], np.array([1, 0]), ["a"], 0.5)["a"]
    assert m["confusion"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 1} and m["auroc"] == 1.0


def test_calibration_holdout_keeps_both_outcomes_of_every_task():
    from rawdream.reward.generalist import stratified_holdout

    tasks = ["reach"] * 20 + ["drawer-close"] * 12
    success = np.array([True] * 2 + [False] * 18 + [True] * 11 + [False])
    held = stratified_holdout(tasks, success, 0.1, np.random.default_rng(0))
    groups = {(tasks[i], bool(success[i])) for i in held}
    # every (task, outcome) group with two or more episodes is represented; a lone episode stays in training
    assert groups == {("reach", True), ("reach", False), ("drawer-close", True)}
    assert len(held) == 1 + 2 + 1 and len(set(held.tolist())) == len(held)


def test_frame_selection_is_fixed_length():
    sel = FrameSelection(middle=4)
    assert sel.indices(17) == [0, 3, 6, 10, 13, 16]
    assert len(sel.indices(3)) == 6 and sel.indices(1) == [0] * 6


def test_sibling_labels_use_pretraining_instructions_only():
    split = resolve_split()
    assert siblings("drawer-close", split) == []  # drawer-open is a held-out target: never a label
    assert "door-close" not in siblings("door-open", split) and "door-lock" in siblings("door-open", split)
    ex = judge_examples(
        ["window-open", "window-open"], np.array([True, False]), split, np.random.default_rng(0)
    )
    rows = list(zip(ex.video.tolist(), ex.task, ex.label.tolist(), ex.kind))
    assert (0, "window-open", 1.0, "own") in rows and (0, "window-close", 0.0, "sibling") in rows
    assert (1, "window-open", 0.0, "own") in rows
    assert not set(ex.task) & set(split.targets)


def test_generalist_judge_beats_chance_on_held_out_episodes(tiny_judge, pretrain_demos):
    info = json.loads((tiny_judge / "judge.json").read_text())
    assert info["trained_on_tasks"] == ["drawer-close", "reach"]
    assert info["reference_tasks"] == ["drawer-close", "reach"]
    # own-instruction rows only: "wrong task -> failure" rows are easy and would flatter the number
    assert info["validation_own"]["auroc"] > 0.6, info["validation_own"]
    judge = make_judge(judge_config("generalist", path=str(tiny_judge), reference=str(pretrain_demos)))
    video = np.zeros((9, 64, 64, 3), np.uint8)
    v = judge([video, video], ["reach the red goal", "close the drawer"])
    # the verdict is the score against the threshold, and the instruction (with its reference) moves the score
    assert all(x.success == (x.score >= judge.cfg.threshold) for x in v)
    assert v[0].score != v[1].score


def test_references_come_from_successful_demos_and_are_looked_up_by_instruction(pretrain_demos):
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.reward.references import MissingReferenceError, References

    refs = References.from_dataset(pretrain_demos)
    assert refs.tasks == ["drawer-close", "reach"]
    ds = LeRobotDataset(pretrain_demos)
    lo, hi = ds.episode_bounds(0)
    frames = ds.decode_episode_frames(0, ds.default_image_key())
    first_task = ds.episodes["rawdream/env_task"][0]
    ref = refs.get(first_task)
    assert ref.shape == (2, 64, 64, 3) and hi - lo == len(frames)
    assert np.abs(ref[1].astype(int) - frames[-1]).mean() < 3  # the demo's last frame (codec tolerance)
    assert refs.task_of("Close the drawer") == "drawer-close"  # any paraphrase, any case
    with pytest.raises(MissingReferenceError, match="no reference demonstration for 'open the window'"):
        refs.for_instructions(["open the window"])


def test_reference_judge_reads_its_reference_and_says_what_it_needs(tiny_judge, pretrain_demos, tmp_path):
    from rawdream.reward.generalist import GeneralistJudge

    with pytest.raises(ValueError, match="--judge.reference"):
        make_judge(judge_config("generalist", path=str(tiny_judge)))
    judge = make_judge(judge_config("generalist", path=str(tiny_judge), reference=str(pretrain_demos)))
    assert isinstance(judge, GeneralistJudge)
    video = np.random.default_rng(0).integers(0, 255, (9, 64, 64, 3), dtype=np.uint8)
    a = judge.scores([video], ["close the drawer"])
    refs = judge.references
    refs.by_task["drawer-close"] = 255 - refs.by_task["drawer-close"]  # another "success looks like this"
    b = judge.scores([video], ["close the drawer"])
    assert a[0] != pytest.approx(b[0], abs=1e-6), "the reference does not change the verdict"


def test_train_judge_needs_references_and_refuses_target_references(labeled_data, tmp_path):
    from rawdream.cli import main
    from rawdream.config import resolve
    from rawdream.reward.generalist import TrainJudgeConfig, train_judge
    from rawdream.splits import TargetTaskLeakError

    cfg = resolve(TrainJudgeConfig, "train_judge", "tiny", {"split.targets": ["push"], "steps": 2})
    with pytest.raises(ValueError, match="--references"):
        train_judge(cfg, labeled_data, tmp_path / "a", progress=False)
    push_demo = tmp_path / "push_demo"  # a demo of the split's target: never a training reference
    assert main(["collect", "demos", "--task", "push", "--out", str(push_demo), "--preset", "tiny"]) == 0
    with pytest.raises(TargetTaskLeakError):
        train_judge(cfg, labeled_data, tmp_path / "b", progress=False, references=push_demo)


def test_generalist_judge_refuses_target_data_and_a_missing_checkpoint(labeled_data, tmp_path):
    from rawdream.cli import main

    assert (
        main(
            [
                "train-judge",
                "--data",
                str(labeled_data),
                "--out",
                str(tmp_path / "j"),
                "--preset",
                "tiny",
                "--split.targets=reach",
            ]
        )
        == 2
    )
    with pytest.raises(FileNotFoundError, match="train-judge"):
        make_judge(judge_config("generalist", path=str(tmp_path / "nothing")))


def test_judge_trains_on_a_learned_policys_own_rollouts(tiny_policy, labeled_data, tiny_wm, tmp_path):
    """`collect policy` rolls the base policy out on pretraining tasks (RL temperature and horizon, simulator
    labels, the labeled layout); train-judge reads it beside the scripted variants; targets are refused."""
    from rawdream.cli import main
    from rawdream.data.lerobot import LeRobotDataset

    out = tmp_path / "policy"
    argv = ["collect", "policy", "--policy", str(tiny_policy), "--preset", "tiny", "--out", str(out)]
    assert main(argv) == 0
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 4 and ds.frame_stride == 8 and ds.manifest["behaviour"] == "policy"
    assert set(ds.episodes["rawdream/behaviour"]) == {"policy"} and ds.episode(0).length == 3  # horizon 2 + 1
    assert main(argv) == 0 and LeRobotDataset(out).num_episodes == 4  # resumed: nothing collected twice
    assert main([*argv[:-2], "--task", "drawer-open", "--out", str(tmp_path / "t")]) == 2  # a held-out target
    judge = tmp_path / "judge"
    args = ["train-judge", "--data", f"{labeled_data},{out}", "--wm", str(tiny_wm), "--out", str(judge)]
    assert main([*args, "--preset", "tiny", "--model.reference=false"]) == 0
    info = json.loads((judge / "judge.json").read_text())
    assert info["episodes_by_behaviour"]["policy"] == 4 and "," in info["dataset"]


def test_closed_loop_imagined_policy_rollouts_are_labelled_by_the_simulator(
    tiny_policy, labeled_data, tiny_wm, tmp_path
):
    """`collect policy --wm`: the policy acts in the world model from the real resets (as RL in imagination); the
    video is the world model's (its first frame the real reset), the labels the simulator's replay of the imagined
    actions; train-judge trains on them as imagined videos (no object labels, not replayed again)."""
    from rawdream.cli import main
    from rawdream.data.lerobot import DEFAULT_IMAGE_KEY, LeRobotDataset
    from rawdream.envs.base import EnvConfig, make_env
    from rawdream.reward.oracle import replay_success

    out = tmp_path / "imagined"
    argv = ["collect", "policy", "--policy", str(tiny_policy), "--wm", str(tiny_wm), "--preset", "tiny"]
    assert main([*argv, "--exploration=chunk", "--episodes_per_task=3", "--out", str(out)]) == 0
    ds = LeRobotDataset(out)
    assert ds.manifest["behaviour"] == "policy_imagined" and ds.manifest["imagined"] is True
    assert set(ds.episodes["rawdream/imagined"]) == {True} and ds.num_episodes == 6  # 2 tasks x 3
    tasks, seeds = list(ds.episodes["rawdream/env_task"]), [int(s) for s in ds.episodes["rawdream/seed"]]
    eps = [ds.episode(i) for i in range(ds.num_episodes)]
    # one row per chunk (the last row is padding after the last frame); a chunk row holds its 8 actions
    acts = np.stack([e.data["action"][:-1] for e in eps])
    video = eps[0].frames[DEFAULT_IMAGE_KEY]
    env_cfg = EnvConfig(image_size=video.shape[1], end_on_success=False)
    replayed = [v.success for v in replay_success(tasks, seeds, acts, env_cfg, workers=0)]
    assert replayed == [bool(x) for x in ds.episodes["rawdream/success"]]
    env = make_env(tasks[0], env_cfg)
    obs, info = env.reset(seeds[0])
    assert np.abs(video[0].astype(int) - obs["image"].astype(int)).mean() < 3  # the real reset (codec aside)
    # the recorded states are the replay's: stepping the stored actions from the reset reproduces them
    states = eps[0].data["observation.environment_state"]
    np.testing.assert_allclose(states[0], info["state"], atol=1e-5)
    for h, chunk in enumerate(acts[0]):
        for a in chunk:
            *_, info = env.step(a, render=False)
        np.testing.assert_allclose(states[h + 1], info["state"], atol=1e-4)
    assert main([*argv, "--exploration=gauss", "--out", str(tmp_path / "x")]) == 2
    # resuming into it without the world model would mix real rollouts into an imagined dataset: refused
    plain = ["collect", "policy", "--policy", str(tiny_policy), "--preset", "tiny", "--episodes_per_task=4"]
    assert main([*plain, "--out", str(out)]) == 2 and LeRobotDataset(out).num_episodes == 6
    # ... and so would imagining in another world model
    other = tmp_path / "other_wm"
    shutil.copytree(tiny_wm, other)
    assert main([*argv[:5], str(other), *argv[6:], "--episodes_per_task=4", "--out", str(out)]) == 2
    judge = tmp_path / "judge"
    args = ["train-judge", "--data", f"{labeled_data},{out}", "--wm", str(tiny_wm), "--out", str(judge)]
    assert main([*args, "--preset", "tiny", "--model.reference=false", "--imagined_fraction=1"]) == 0
    info = json.loads((judge / "judge.json").read_text())
    assert info["episodes_by_behaviour"]["policy_imagined"] == 6
    labelled = sum(info["episodes_by_behaviour"].values())
    # every real training episode replayed once, the imagined ones counted as imagined and not replayed again
    assert info["imagined_videos"] < labelled
    # a task held out of training is scored on its closed-loop imagined rollouts apart from its replays
    val = [*args[:-1], str(tmp_path / "v"), "--preset", "tiny", "--model.reference=false", "--steps=5"]
    assert main([*val, f"--val_tasks=[{tasks[-1]}]"]) == 0
    unseen = json.loads((tmp_path / "v" / "judge.json").read_text())["validation_tasks"]
    assert unseen["closed_loop"]["per_task"][tasks[-1]]["n"] == 3 and "imagined" in unseen


def test_object_loss_teaches_the_judge_where_the_objects_are(labeled_data, pretrain_demos, tmp_path):
    """--object_loss adds a head from each judged frame's features to the objects' positions (the simulator state
    the labeled data recorded); its loss falls in training, the saved judge keeps the head and judges as any
    other, and a judge without the head says so when asked for positions."""
    import torch

    from rawdream.cli import main
    from rawdream.reward.generalist.model import GeneralistConfig, JudgeNet

    out = tmp_path / "judge_obj"
    args = [*_train_judge_args(labeled_data, pretrain_demos), "--out", str(out)]
    assert main([*args, "--preset", "tiny", "--split.targets=push", "--steps=60", "--object_loss=1"]) == 0
    info = json.loads((out / "judge.json").read_text())
    assert info["config"]["object_outputs"] == 6  # Meta-World: two objects' xyz
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    obj = [r["judge/object_loss"] for r in rows if "judge/object_loss" in r]
    assert len(obj) == 6 and np.mean(obj[-2:]) < 0.7 * obj[0], obj
    judge = make_judge(judge_config("generalist", path=str(out), reference=str(pretrain_demos)))
    video = np.zeros((5, 64, 64, 3), np.uint8)
    assert judge([video], ["reach the red goal"])[0].score is not None

    # the object gate: the demo itself moves its objects all the way (progress 1) and keeps the judge's verdict;
    # a video that stays on the demo's first frame moves nothing and is a failure whatever the judge's p
    gated = make_judge(
        judge_config(
            "generalist", path=str(out), reference=str(pretrain_demos), object_gate=0.5, object_gate_min=0.0
        )
    )
    first, last = gated.references.for_instructions(["close the drawer"])[0]
    demo, still = np.stack([first] + [last] * 6), np.stack([first] * 7)
    plain = judge([demo], ["close the drawer"])[0]
    kept, stopped = gated([demo, still], ["close the drawer"] * 2)
    assert kept.success == plain.success and kept.score == pytest.approx(plain.score)
    assert stopped.success is False and stopped.score == 0.0 and "object progress 0.00" in stopped.raw
    headless = tmp_path / "judge_plain"
    plain_args = [*args[:-1], str(headless), "--preset", "tiny", "--split.targets=push", "--steps=5"]
    assert main([*plain_args, "--object_loss=0"]) == 0
    with pytest.raises(ValueError, match="object_gate=0.5 needs a judge with an object head"):
        make_judge(
            judge_config("generalist", path=str(headless), reference=str(pretrain_demos), object_gate=0.5)
        )
    with pytest.raises(ValueError, match="object_gate_space=image reads the object's keypoint"):
        make_judge(
            judge_config(
                "generalist",
                path=str(out),
                reference=str(pretrain_demos),
                object_gate=0.5,
                object_gate_space="image",
            )
        )
    net = JudgeNet(GeneralistConfig(channels=(8, 8, 8), hidden=16, cond_dim=8, reference=False))
    with pytest.raises(ValueError, match="no object head"):
        net(torch.zeros(1, 6, 64, 64, 3, dtype=torch.uint8), torch.zeros(1, 768), objects=True)


def test_training_shifts_a_video_s_frames_alike_so_its_changes_are_real():
    """The judge reads each frame's change since the first; a shift drawn per frame (as judges before stop 39 were
    trained) draws a change at every edge. One shift per video: a still video stays still, videos differ."""
    import torch

    from rawdream.reward.generalist.train import shift_videos

    base = torch.randint(0, 200, (8, 1, 64, 64, 3), dtype=torch.uint8)
    videos = base + torch.arange(6, dtype=torch.uint8).view(1, 6, 1, 1, 1)  # frame k = frame 0 + k everywhere
    out = shift_videos(videos, 3, torch.Generator().manual_seed(0))
    assert out.shape == videos.shape
    change = out.int() - out[:, :1].int()  # each frame's change since the first, what the judge reads
    assert (
        change == torch.arange(6).view(1, 6, 1, 1, 1)
    ).all()  # the frames kept their order and moved alike
    assert (out != videos).any(dim=(1, 2, 3, 4)).sum() >= 6  # most videos moved (one in 49 stays put)
    assert torch.equal(shift_videos(videos, 0, torch.Generator()), videos)


def test_displacement_targets_are_each_objects_motion_since_the_first_frame():
    """--object_target=displacement: per judged frame, how far each object moved since the video's first frame,
    scaled by the training displacements' RMS - 0 stays "did not move" (no mean removed), a slot that never moves
    does not blow up, videos without labels stay NaN; "position" keeps z-scored positions."""
    from rawdream.reward.generalist.train import TrainJudgeConfig, VideoPool, _object_clips

    cfg = TrainJudgeConfig()
    frames = cfg.model.frames.middle + 2
    n = 60
    moving = np.zeros((n, 6), np.float32)
    moving[:, 0] = np.linspace(0.0, 0.2, n)  # object 1 slides 20 cm along x; object 2 never moves
    moving[:, 3:] = [0.1, 0.7, 0.0]
    still = np.tile(moving[:1] + np.array([0.3, 0, 0, 0, 0, 0], np.float32), (n, 1))
    pool = VideoPool(
        videos=[np.zeros((n, 64, 64, 3), np.uint8)] * 3, tasks=["push"] * 3, success=np.ones(3, bool),
        imagined=np.zeros(3, bool), train=np.arange(3), holdout=np.zeros(0, int), unseen=np.zeros(0, int),
        behaviours=["expert"] * 3, objects=[moving, still, None],
    )  # fmt: skip
    disp = _object_clips(TrainJudgeConfig(object_loss=1, object_target="displacement"), pool)
    assert disp.shape == (3, frames, 6) and np.isnan(disp[2]).all()
    assert np.allclose(disp[:, 0][:2], 0) and np.allclose(disp[1], 0)  # the still video: no motion anywhere
    assert disp[0, -1, 0] > 1.5 and np.all(np.diff(disp[0, :, 0]) > 0) and np.allclose(disp[0, :, 1:], 0)
    pos = _object_clips(TrainJudgeConfig(object_loss=1), pool)
    assert abs(pos[1, -1, 0]) > 0.5  # positions: the still video's object is far from the mean, not "0"
    with pytest.raises(ValueError, match="object_target='speed': use position or displacement"):
        TrainJudgeConfig(object_target="speed").validate()


def test_keypoints_give_the_object_head_where_a_small_object_is():
    """--model.keypoints: object k's position is read from where channel k of the 16 x 16 map fires, alone. On
    frames with one 3 x 3 px dot at a random place it learns the dot's image position within 200 steps (a head that
    could not localise stays near the targets' variance, about 0.25)."""
    import torch

    from rawdream.reward.generalist.model import GeneralistConfig, JudgeNet

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = GeneralistConfig(channels=(8, 16, 16), hidden=32, cond_dim=8, reference=False, keypoints=True)
    net = JudgeNet(dataclasses.replace(cfg, frames=FrameSelection(middle=0), object_outputs=2))
    kp = torch.randn(4, 2 * 16)  # the head reads channel 0's keypoint (object 1) and nothing else
    other = kp.clone()
    other[:, 1:16], other[:, 17:] = torch.randn(4, 15), torch.randn(4, 15)
    assert torch.equal(net.object_head(kp), net.object_head(other))
    assert not torch.equal(net.object_head(kp), net.object_head(kp + 0.1))

    def dots(n):
        x = np.zeros((n, 2, 64, 64, 3), np.uint8)
        rc = rng.integers(4, 60, (n, 2, 2))
        for i, f in np.ndindex(n, 2):
            x[i, f, rc[i, f, 0] - 1 : rc[i, f, 0] + 2, rc[i, f, 1] - 1 : rc[i, f, 1] + 2] = 255
        return torch.from_numpy(x), torch.from_numpy((rc / 32.0 - 1).astype(np.float32))

    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(200):
        x, y = dots(16)
        loss = ((net(x, torch.zeros(16, 768), objects=True)[1] - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = dots(64)
    with torch.no_grad():
        err = ((net(x, torch.zeros(64, 768), objects=True)[1] - y) ** 2).mean().item()
    assert err < 0.15 * y.var().item(), (err, y.var().item())


def test_shift_offsets_say_where_a_video_s_content_went():
    """The heatmap's targets move with their video: the offsets shift_videos reports are where a pixel went."""
    import torch

    from rawdream.reward.generalist.train import shift_videos

    videos = torch.zeros(32, 2, 64, 64, 3, dtype=torch.uint8)
    videos[:, :, 20, 40] = 255
    out, moved = shift_videos(videos, 3, torch.Generator().manual_seed(1), offsets=True)
    assert moved.shape == (32, 2) and moved.abs().max() <= 3 and len({tuple(m) for m in moved.tolist()}) > 5
    for v, (dx, dy) in zip(out, moved.tolist()):
        assert v[:, 20 + dy, 40 + dx].min() == 255 and v.sum() == 2 * 3 * 255


def test_the_heatmap_finds_the_camera_of_every_meta_world_dataset_and_refuses_others():
    """`collect` records the camera in the manifest, `collect policy` in its config: both place the objects; a
    LIBERO dataset (another camera) and one without a camera are refused with the flag that does without."""
    from types import SimpleNamespace

    from rawdream.data.lerobot import DatasetError
    from rawdream.data.objects import dataset_camera
    from rawdream.envs.base import CameraConfig

    cam = dataclasses.asdict(CameraConfig(azimuth=120.0))
    collected = SimpleNamespace(root="a", manifest={"env": "metaworld", "image_size": 64, "camera": cam})
    rollouts = SimpleNamespace(
        root="b", manifest={"env": "metaworld", "image_size": 96, "collect_config": {"env": {"camera": cam}}}
    )
    assert dataset_camera(collected, "--x=0") == (CameraConfig(azimuth=120.0), 64)
    assert dataset_camera(rollouts, "--x=0") == (CameraConfig(azimuth=120.0), 96)
    for bad in ({"env": "libero", "image_size": 64, "camera": cam}, {"env": "metaworld", "image_size": 64}):
        with pytest.raises(DatasetError, match="records no Meta-World free camera.*or set --x=0"):
            dataset_camera(SimpleNamespace(root="c", manifest=bad), "--x=0")


def test_heatmap_loss_is_zero_on_its_target_and_grows_away_from_it():
    """KL from a Gaussian at the object's pixel to the keypoint channel's softmax: ~0 when the logits draw that
    Gaussian, larger with the peak two cells off, rows without a label (NaN) ignored, all-NaN a zero with a grad."""
    import torch

    from rawdream.reward.generalist.train import heatmap_loss

    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")

    def gaussian_logits(col, row):  # a peak at cell (col, row)
        return (-((xs - col) ** 2 + (ys - row) ** 2) / (2 * 0.75**2)).view(1, 1, 16, 16)

    at = torch.tensor([[[4 * 5 + 2.0, 4 * 9 + 2.0]]])  # px of cell (5, 9)'s centre in a 64 px frame
    assert heatmap_loss(gaussian_logits(5, 9), at, 64).item() < 1e-4
    assert heatmap_loss(gaussian_logits(7, 9), at, 64).item() > 1.0
    two = torch.cat([gaussian_logits(5, 9), gaussian_logits(0, 0)])
    nan = torch.tensor([[[float("nan"), float("nan")]]])
    assert heatmap_loss(two, torch.cat([at, nan]), 64).item() < 1e-4
    none = torch.zeros(1, 1, 16, 16, requires_grad=True)
    loss = heatmap_loss(none, nan, 64)
    loss.backward()
    assert loss.item() == 0.0 and none.grad is not None


def test_a_heatmap_keeps_the_keypoint_on_the_object_when_the_hand_moves_it_along():
    """The heatmap's target is the object's own pixels: trained on videos where the hand carries the object (8 px
    apart) in half of them and the object lies elsewhere in the rest, object k's keypoint sits on the object; then
    the hand sweeps past and the object stays: the keypoint stays with the object (a keypoint that follows the
    hand, or a target drawn in the wrong place, fails this)."""
    import torch

    from rawdream.reward.generalist.model import GeneralistConfig, JudgeNet
    from rawdream.reward.generalist.train import heatmap_loss, shift_videos

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = GeneralistConfig(channels=(8, 8, 8), hidden=16, cond_dim=8, reference=False, keypoints=True)
    net = JudgeNet(dataclasses.replace(cfg, frames=FrameSelection(middle=0), object_outputs=3))

    def scene(hand, obj):  # (n, 2) px each: a 6 x 6 grey hand, a 2 x 2 red object
        x = np.zeros((len(hand), 64, 64, 3), np.uint8)
        for i, ((hc, hr), (oc, orow)) in enumerate(zip(hand, obj)):
            x[i, hr - 3 : hr + 3, hc - 3 : hc + 3] = 160
            x[i, orow - 1 : orow + 1, oc - 1 : oc + 1] = (255, 0, 0)
        return x

    def batch(n):
        hand = rng.integers(8, 48, (n, 2, 2))
        carried = rng.random(n) < 0.5
        obj = np.where(carried[:, None, None], hand + np.array([8, 0]), rng.integers(8, 56, (n, 1, 2)))
        x = np.stack([scene(hand[:, f], obj[:, f]) for f in range(2)], 1)
        return torch.from_numpy(x), torch.from_numpy(obj.astype(np.float32))[:, :, None, :]

    opt = torch.optim.Adam(net.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        x, at = batch(16)
        x, moved = shift_videos(
            x, 3, gen, offsets=True
        )  # as train-judge does: the target moves with the video
        _, _, maps = net(x, torch.zeros(16, 768), objects=True, maps=True)
        loss = heatmap_loss(maps, (at + moved[:, None, None, :]).flatten(0, 1), 64)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the hand sweeps 24 px right, the object stays where it was
    start = rng.integers(12, 24, (32, 2))
    obj = start + np.array([8, 0])
    x = np.stack([scene(start, obj), scene(start + np.array([24, 0]), obj)], 1)
    with torch.no_grad():
        px = net.keypoints_of(torch.from_numpy(x), torch.zeros(32, 768))[:, :, 0]  # (32, 2 frames, px)
    assert np.abs(px[:, 0].numpy() - obj).mean() < 2.5, np.abs(px[:, 0].numpy() - obj).mean()
    moved = (px[:, 1, 0] - px[:, 0, 0]).abs().mean().item()
    assert moved < 3.0, f"the keypoint moved {moved:.1f} px with the hand (24 px)"


def test_erasing_the_object_paints_the_workspace_over_it_and_asks_the_keypoint_for_no_object():
    """--object_erase: in the videos drawn whose first object is labelled throughout, a disc around it is the empty
    workspace from a random judged frame after the first on, and those frames are marked absent; the heatmap's KL
    for an absent object is 0 for a uniform map and grows with a peak."""
    import torch

    from rawdream.reward.generalist.train import erase_objects, heatmap_loss

    videos = torch.full((3, 4, 16, 16, 3), 100, dtype=torch.uint8)
    videos[:, :, 7:10, 7:10] = 0  # a 3 px object at px (8.5, 8.5)
    px = np.full((3, 4, 2, 2), np.nan, np.float32)
    px[:, :, 0] = 8.5
    px[2, 1, 0] = np.nan  # the third video's object is not labelled in one frame: never erased
    before = videos.clone()
    background = torch.full((16, 16, 3), 100, dtype=torch.uint8)
    erased, absent = erase_objects(videos, px, background, 1.0, torch.Generator().manual_seed(0))
    assert erased.tolist() == [True, True, False] and not absent[:, :, 1].any() and not absent[2].any()
    for i in (0, 1):
        first = int(np.argmax(absent[i, :, 0].numpy()))
        assert first >= 1 and absent[i, first:, 0].all()  # from a frame after the first to the end
        assert (videos[i, first:, 7:10, 7:10] == 100).all() and torch.equal(
            videos[i, :first], before[i, :first]
        )
    assert torch.equal(videos[2], before[2])
    none, _ = erase_objects(before.clone(), px, background, 0.0, torch.Generator().manual_seed(0))
    assert not none.any()
    gone = torch.ones(1, 1, dtype=torch.bool)
    nan = torch.full((1, 1, 2), float("nan"))
    assert heatmap_loss(torch.zeros(1, 1, 16, 16), nan, 64, absent=gone).item() == pytest.approx(
        0.0, abs=1e-6
    )
    peaked = torch.zeros(1, 1, 16, 16)
    peaked[0, 0, 5, 5] = 10.0
    assert heatmap_loss(peaked, nan, 64, absent=gone).item() > 1.0
    # one object absent, one labelled: the mean of the two KLs
    at = torch.tensor([[[4 * 5 + 2.0, 4 * 5 + 2.0]]])  # cell (5, 5)'s centre
    alone = heatmap_loss(peaked, at, 64).item()
    both = heatmap_loss(
        torch.cat([peaked] * 2), torch.cat([nan, at]), 64, absent=torch.tensor([[True], [False]])
    )
    assert both.item() == pytest.approx(
        (heatmap_loss(peaked, nan, 64, absent=gone).item() + alone) / 2, rel=1e-5
    )


def test_a_keypoint_judge_trains_saves_and_gates_and_refuses_a_displacement_target(
    labeled_data, pretrain_demos, play_data, tmp_path, capsys
):
    """train-judge --model.keypoints=true --object_heatmap=1 end to end: the judge records its head, target and
    heatmap weight, logs the heatmap's KL, loads with one keypoint per object and reads through the object gate (a
    still video closes it, the demo itself passes); a keypoint head with a displacement target is refused, and so
    is a heatmap without keypoints."""
    from rawdream.cli import main
    from rawdream.reward.generalist.model import KeypointObjectHead

    out = tmp_path / "judge_kp"
    args = [*_train_judge_args(labeled_data, pretrain_demos), "--out", str(out), "--preset", "tiny"]
    flags = ["--split.targets=push", "--steps=5", "--object_loss=1"]
    assert main([*args, *flags, "--model.keypoints=true", "--object_heatmap=1", "--log_every=1"]) == 0
    info = json.loads((out / "judge.json").read_text())
    assert info["object_target"] == "position" and info["config"]["keypoints"] is True
    assert info["object_heatmap"] == 1.0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    kl = [r["judge/object_heatmap_kl"] for r in rows if "judge/object_heatmap_kl" in r]
    assert len(kl) == 5 and all(0 < k < 10 for k in kl), kl
    gated = make_judge(
        judge_config(
            "generalist", path=str(out), reference=str(pretrain_demos), object_gate=0.5, object_gate_min=0
        )
    )
    assert isinstance(gated.model.object_head, KeypointObjectHead) and gated.model.object_head.objects == 2
    first, last = gated.references.for_instructions(["close the drawer"])[0]
    still, demo = gated([np.stack([first] * 7), np.stack([first] + [last] * 6)], ["close the drawer"] * 2)
    assert still.success is False and "object progress 0.00" in still.raw  # nothing moved: the gate closes
    assert "object progress" not in demo.raw  # the demo moved its objects exactly as far as the demo: open
    # the gate in image space: the first object's keypoint in pixels, the demo's own motion as the yardstick
    in_image = make_judge(
        judge_config(
            "generalist", path=str(out), reference=str(pretrain_demos), object_gate=0.5, object_gate_space="image",
            object_gate_min_px=0.0,
        )
    )  # fmt: skip
    still, demo = in_image([np.stack([first] * 7), np.stack([first] + [last] * 6)], ["close the drawer"] * 2)
    assert (
        still.success is False and "object progress 0.00" in still.raw and "object progress" not in demo.raw
    )
    moved = in_image._demo_motion("close the drawer", in_image.model.cfg.frames.middle + 2)
    assert moved.shape == (2,)  # column, row px
    # the fade gate: the keypoint's softmax peak in the last judged frame over the first, under the minimum: a
    # failure said as such (a minimum just under the demo's own ratio lets it pass)
    video = np.stack([first] + [last] * 6)
    _, _, peak = in_image._objects(*in_image._inputs([video], ["close the drawer"]))
    ratio = float(peak[0, -1] / peak[0, 0])
    for fade, passes in ((ratio * 1.01, False), (ratio * 0.99, True)):
        faded = make_judge(
            judge_config(
                "generalist", path=str(out), reference=str(pretrain_demos), object_gate=0.5,
                object_gate_space="image", object_gate_min_px=0.0, object_fade_min=fade,
            )
        )  # fmt: skip
        (verdict,) = faded([video], ["close the drawer"])
        if passes:  # as without the fade gate
            assert "faded" not in verdict.raw and verdict.success is demo.success
        else:
            assert "the object faded" in verdict.raw and verdict.success is False
    with pytest.raises(ValueError, match="--judge.object_fade_min=0.5 reads the object gate's keypoint"):
        judge_config("generalist", path=str(out), object_gate=0.5, object_fade_min=0.5).validate()
    with pytest.raises(ValueError, match="object_gate_space='pixels': use head or image"):
        judge_config("generalist", path=str(out), object_gate_space="pixels").validate()
    # a minimum the demo's motion does not reach: the gate is off for that instruction, said once
    off = make_judge(
        judge_config(
            "generalist", path=str(out), reference=str(pretrain_demos), object_gate=0.5, object_gate_min=1e9
        )
    )
    with pytest.warns(UserWarning, match="object gate is off for 'close the drawer'") as said:
        off([np.stack([first] * 7)] * 2, ["close the drawer"] * 2)
        off([np.stack([first] * 7)], ["close the drawer"])
    assert len([w for w in said if "object gate is off" in str(w.message)]) == 1
    refused = tmp_path / "judge_kp_disp"
    both = ["--model.keypoints=true", "--object_target=displacement"]
    assert main([*args[:-3], str(refused), "--preset", "tiny", *flags, *both]) == 2
    assert "displacement with --model.keypoints=true" in capsys.readouterr().err and not refused.exists()
    assert main([*args[:-3], str(refused), "--preset", "tiny", *flags, "--object_heatmap=1"]) == 2
    assert "--object_heatmap=1.0 trains the keypoint object head" in capsys.readouterr().err
    assert main([*args[:-3], str(refused), "--preset", "tiny", *flags, "--object_erase=0.5"]) == 2
    assert "--object_erase=0.5 teaches the keypoint heatmap an absent object" in capsys.readouterr().err
    # the erasing end to end: trains, and says so in judge.json
    erase = tmp_path / "judge_kp_erase"
    heat = ["--model.keypoints=true", "--object_heatmap=1", "--object_erase=1"]
    assert main([*args[:-3], str(erase), "--preset", "tiny", *flags, *heat]) == 0
    assert json.loads((erase / "judge.json").read_text())["object_erase"] == 1.0
    # play frames train the heatmap too (--keypoint_play): logged beside the labelled loss, recorded, and a play
    # dataset is required (a labelled one is refused), as is the heatmap itself
    played = tmp_path / "judge_kp_play"
    heat = ["--model.keypoints=true", "--object_heatmap=1", "--log_every=1", "--keypoint_play_batch=4"]
    assert (
        main([*args[:-3], str(played), "--preset", "tiny", *flags, *heat, f"--keypoint_play={play_data}"])
        == 0
    )
    info = json.loads((played / "judge.json").read_text())
    assert info["keypoint_play"]["episodes"] == 4 and info["keypoint_play"]["dataset"] == str(
        play_data.resolve()
    )
    rows = [json.loads(x) for x in (played / "metrics.jsonl").read_text().splitlines()]
    kl = [r["judge/play_heatmap_kl"] for r in rows if "judge/play_heatmap_kl" in r]
    assert len(kl) == 5 and all(0 < k < 10 for k in kl), kl
    assert (
        main([*args[:-3], str(refused), "--preset", "tiny", *flags, *heat, f"--keypoint_play={labeled_data}"])
        == 2
    )
    assert "is not a play dataset (kind 'labeled')" in capsys.readouterr().err
    assert main([*args[:-3], str(refused), "--preset", "tiny", *flags, f"--keypoint_play={play_data}"]) == 2
    assert "trains the keypoint heatmap on play frames: add --object_heatmap=1" in capsys.readouterr().err


def test_paper_table_tiny(tiny_policy, tiny_wm, tiny_judge, pretrain_demos, tmp_path):
    """The table from a main job's run directory (--run: its models where RunLayout keeps them)."""
    from rawdream.cli import main
    from rawdream.layout import RunLayout

    run = RunLayout(tmp_path / "run")
    for rel, target in (
        (run.POLICY_SFT, tiny_policy),
        (run.WM, tiny_wm),
        (run.JUDGE, tiny_judge),
        (run.TARGET_DEMOS, pretrain_demos),
    ):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).symlink_to(Path(target).resolve())
    # the run read its judge through an object gate: the table's RL rows read it the same way
    (run / "config.yaml").write_text("judge_readout: {object_gate: 0.5}\n")
    assert (
        main(["experiment", "paper-table", "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
        == 2
    )
    assert (
        main(
            [
                "experiment",
                "paper-table",
                "--run",
                str(run.root),
                "--preset",
                "tiny",
                "--tasks=reach",
                "--split.targets=push",
                "--out",
                str(tmp_path / "pt"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "pt" / "paper_table.json").read_text())
    rows = {(r["row"], r["protocol"]): r for r in report["table"]}
    names = {"sft", "online_short", "sim_judge", "rawdream", "rawdream_no_dnv"}
    assert set(rows) == {(n, p) for n in names for p in ("practised", "new")}
    for p in ("practised", "new"):
        assert rows[("online_short", p)]["target_trajectories_rl"] == 4  # 1 iteration x 2 groups x 2 rollouts
        assert rows[("sim_judge", p)]["target_trajectories_rl"] == 4
        assert rows[("rawdream", p)]["target_trajectories_rl"] == 0
        assert (
            rows[("rawdream", p)]["paired_vs_sft"]["episodes"]
            == rows[("sft", p)]["tasks"]["reach"]["episodes"]
        )
    # practised layouts are the initial states RL trained from (2 in the tiny preset); new ones the eval seeds
    assert rows[("sft", "practised")]["tasks"]["reach"]["episodes"] == 2
    assert report["protocols"]["practised"]["layouts"] == "practised"
    assert set(report["dnv"]) == {"sim_judge", "rawdream", "rawdream_no_dnv"}
    saved = yaml.safe_load((tmp_path / "pt" / "config.yaml").read_text())
    assert saved["dream"]["judge"]["object_gate"] == 0.5
    md = (tmp_path / "pt" / "paper_table.md").read_text()
    assert "| 1-shot SFT | practised |" in md and "| 1-shot SFT | new |" in md


def test_mimic_negatives_follow_the_experts_path_displaced_and_keep_the_simulators_labels():
    """The judge's hard negatives: the hand retraces the scripted expert's path from the same initial state, offset
    by a few centimetres, so it ends where a success ends while the object stays put; the simulator labels them.
    Only labeled collections may ask for them."""
    from dataclasses import replace

    from rawdream.config import build
    from rawdream.data.collect import (
        CollectConfig,
        EpisodeSpec,
        _worker_env,
        expert_path,
        make_specs,
        run_episode,
    )
    from rawdream.envs.base import EnvConfig

    forms = set()
    env = _worker_env("reach", EnvConfig(max_steps=96))
    for seed in range(50_000, 50_004):
        spec = EpisodeSpec(task="reach", seed=seed, behaviour="mimic", max_steps=96, frame_stride=8)
        ep = run_episode(spec, EnvConfig())
        assert ep["success"] == bool(ep["data"]["next.success"].any())  # the simulator's own label, kept
        path, _ = expert_path(env, seed, 96)
        state = ep["data"]["observation.environment_state"]
        gap = np.linalg.norm(state[1:, :3] - path[7::8], axis=1)  # hand vs expert's hand after each chunk
        if 0.015 < gap[3:].mean() < 0.11 and gap[3:].std() < 0.02:
            forms.add("path")  # a near-constant offset of 2..10 cm from the expert's hand
        elif np.linalg.norm(state[-1, :3] - state[-1, 36:39]) < 0.04:
            forms.add("goal")  # the hand on the goal marker (state[36:39]) at the end
        else:
            raise AssertionError(f"seed {seed}: neither the displaced path nor the goal ({gap.round(3)})")
    assert forms == {"path", "goal"}
    # the expert from the same state succeeds; a displaced copy of its path or a hand on the goal mostly does not
    assert run_episode(replace(spec, behaviour="expert"), EnvConfig())["success"]

    mix = {"frac_expert": 0.4, "frac_stall": 0.25, "frac_random": 0.05, "frac_poke": 0.1, "frac_mimic": 0.2}
    cfg = build(CollectConfig, {"kind": "labeled", "episodes_per_task": 20, "tasks": ["reach"], **mix})
    assert 1 <= sum(s.behaviour == "mimic" for s in make_specs(cfg)) <= 10
    with pytest.raises(ValueError, match="frac_mimic=0.2 is for labeled judge data only"):
        build(CollectConfig, {"kind": "play", **mix})


def test_retreat_positives_succeed_then_take_the_hand_away_and_a_success_the_release_undid_is_left_out():
    """The judge's hard positives: the expert until success, then the hand lifts and leaves for three chunks, so
    the video ends with the object done and the hand elsewhere; a retreat whose release undid the success is left
    out of the judge's data; only labeled collections may ask for them."""
    from dataclasses import replace
    from types import SimpleNamespace

    from rawdream.config import build
    from rawdream.data.collect import CollectConfig, EpisodeSpec, make_specs, run_episode
    from rawdream.envs.base import EnvConfig
    from rawdream.reward.generalist.train import _clean

    spec = EpisodeSpec(task="drawer-close", seed=50_000, behaviour="retreat", max_steps=128, frame_stride=8)
    ep = run_episode(spec, EnvConfig())
    ok = ep["data"]["next.success"]
    assert ep["success"] and ok[-2]  # succeeded, and the drawer is still shut when the episode ends
    first = int(np.argmax(ok))  # the chunk in which it succeeded
    assert len(ok) - 1 - first >= 3  # it went on past the success (an expert episode ends there)
    hand = ep["data"]["observation.environment_state"][:, :3]
    assert np.linalg.norm(hand[-1] - hand[first + 1]) > 0.1  # and the hand left the handle
    # a collection that ends its episodes on success still lets a retreat run on
    on_success = run_episode(replace(spec, end_on_success=True), EnvConfig())
    assert len(on_success["data"]["next.success"]) == len(ok)
    expert = run_episode(replace(spec, behaviour="expert", end_on_success=True), EnvConfig())
    assert (
        expert["data"]["next.success"].sum() == 1
    )  # the way every scripted success used to end: right there

    def dataset(success_rows):
        rows = np.asarray(success_rows, bool)
        return SimpleNamespace(
            num_episodes=1,
            episodes={"rawdream/behaviour": ["retreat"]},
            episode_bounds=lambda i: (0, len(rows)),
            column=lambda key: rows,
        )

    videos = SimpleNamespace(success=np.array([True]))
    assert _clean(dataset([0, 1, 1, 1, 0]), videos, 0)  # held to the end: a clean positive
    assert not _clean(dataset([0, 1, 1, 0, 0]), videos, 0)  # dropped after it: neither
    assert _clean(dataset([0, 0, 0, 0, 0]), SimpleNamespace(success=np.array([False])), 0)  # a plain failure

    mix = {"frac_expert": 0.4, "frac_stall": 0.2, "frac_random": 0.05, "frac_poke": 0.05, "frac_mimic": 0.1}
    cfg = build(CollectConfig, {"kind": "labeled", "episodes_per_task": 20, "tasks": ["reach"], **mix,
                                "frac_retreat": 0.2})  # fmt: skip
    specs = make_specs(cfg)
    assert 1 <= sum(s.behaviour == "retreat" for s in specs) <= 10
    assert sum(s.behaviour == "mimic" for s in specs) >= 1
    with pytest.raises(ValueError, match="frac_retreat=0.2 is for labeled judge data only"):
        build(
            CollectConfig, {"kind": "play", **mix, "frac_mimic": 0.0, "frac_expert": 0.5, "frac_retreat": 0.2}
        )
    with pytest.raises(ValueError, match="frac_retreat must be 1, got 1.100"):
        build(CollectConfig, {"kind": "labeled", **mix, "frac_retreat": 0.3})


def test_a_judge_without_the_instruction_reads_only_the_video_and_the_reference():
    import torch

    from rawdream.policy.text import TEXT_DIM
    from rawdream.reward.generalist.model import GeneralistConfig, JudgeNet

    torch.manual_seed(0)
    net = JudgeNet(GeneralistConfig(instruction=False)).eval()
    for p in net.parameters():  # zero-initialised layers would hide what the condition reaches
        torch.nn.init.normal_(p, std=0.05)
    frames = torch.randint(0, 255, (2, 6, 64, 64, 3), dtype=torch.uint8)
    ref = torch.randint(0, 255, (2, 2, 64, 64, 3), dtype=torch.uint8)
    text_a, text_b = torch.randn(2, 2 * TEXT_DIM), torch.randn(2, 2 * TEXT_DIM)
    with torch.no_grad():
        assert torch.equal(net(frames, text_a, ref), net(frames, text_b, ref))
        assert not torch.allclose(net(frames, text_a, ref), net(frames, text_a, ref.flip(0)))
        net.cfg.instruction = True  # the same weights with the instruction shown do read it
        assert not torch.allclose(net(frames, text_a, ref), net(frames, text_b, ref))


def test_demo_calibration_puts_the_threshold_between_the_demo_and_doing_nothing(tiny_judge, pretrain_demos):
    cfg = judge_config("generalist", path=str(tiny_judge), reference=str(pretrain_demos), calibration="demo")
    judge = make_judge(cfg)
    text = "close the drawer"
    demo = judge.references.videos["drawer-close"]
    assert demo.ndim == 4 and len(demo) >= 2  # one frame per action chunk of the first demo
    still = np.repeat(demo[:1], len(demo), axis=0)
    p_demo, p_still = judge.scores([demo, still], [text, text])
    thr = judge.threshold(text)
    assert min(p_demo, p_still) <= thr <= max(p_demo, p_still)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(thr) == pytest.approx((logit(p_demo) + logit(p_still)) / 2, abs=1e-4)
    verdicts = judge([demo, still], [text, text])
    assert [v.success for v in verdicts] == [p_demo >= thr, p_still >= thr]
    assert make_judge(
        judge_config("generalist", path=str(tiny_judge), reference=str(pretrain_demos))
    ).threshold(text) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="use fixed, demo or imagined"):
        judge_config("generalist", path=str(tiny_judge), calibration="per-task")


def test_imagined_calibration_anchors_on_the_demo_replayed_in_the_world_model(
    tiny_judge, pretrain_demos, tiny_wm
):
    from rawdream.data.lerobot import LeRobotDataset
    from rawdream.reward.base import reading_through
    from rawdream.reward.generalist.judge import demo_cut, imagined_demo

    settings = dict(
        path=str(tiny_judge), reference=str(pretrain_demos), calibration="imagined", calibration_cut=0.5
    )
    with pytest.raises(ValueError, match="--judge.calibration_wm DIR"):  # it needs a world model to replay in
        make_judge(judge_config("generalist", **settings))
    with pytest.raises(ValueError, match="at least 1 noise draw"):
        judge_config("generalist", **settings, calibration_draws=0)
    # the commands that imagine fill in their own world model; a judge that does not calibrate this way is left alone
    cfg = reading_through(judge_config("generalist", **settings, calibration_draws=2), tiny_wm)
    assert cfg.calibration_wm == str(tiny_wm)
    demo_cfg = judge_config(
        "generalist", path=str(tiny_judge), reference=str(pretrain_demos), calibration="demo"
    )
    assert reading_through(demo_cfg, tiny_wm) == demo_cfg
    judge = make_judge(cfg)
    text = "close the drawer"
    refs = judge.references
    state, actions = refs.actions["drawer-close"]
    ds = LeRobotDataset(pretrain_demos)
    lo, hi = ds.episode_bounds(list(ds.episodes["rawdream/env_task"]).index("drawer-close"))
    assert np.array_equal(state, ds.column("observation.state")[lo])  # the first demo's own first state
    # one action per control step, without the no-action row collect writes at the episode's last frame
    assert np.array_equal(actions, ds.column("action")[lo : hi - 1]) and np.abs(actions[-1]).sum() > 0
    imagined = imagined_demo(str(tiny_wm), refs, "drawer-close", 2)
    # one frame per action chunk, as in the real demo's video that the "demo" calibration reads
    assert imagined.shape == (2, *refs.videos["drawer-close"].shape)
    assert (imagined[:, 0] == refs.videos["drawer-close"][0]).all()  # from the demo's real first frame
    assert np.array_equal(imagined, imagined_demo(str(tiny_wm), refs, "drawer-close", 2))  # seeded draws
    assert not np.array_equal(imagined[0], imagined[1])  # two draws of the world model's noise
    anchors = [*imagined, *(demo_cut(v, 0.5) for v in imagined)]
    p = judge.scores(anchors, [text] * len(anchors))
    logit = np.log(p / (1 - p))
    thr = judge.threshold(text)
    assert np.log(thr / (1 - thr)) == pytest.approx(logit.mean(), abs=1e-4)
    # the real demo's threshold is another number: the anchors are what moved
    real = make_judge(judge_config("generalist", **{**settings, "calibration": "demo"})).threshold(text)
    assert real != pytest.approx(thr, abs=1e-6)


def test_demo_cut_stops_the_demo_part_way_and_holds_its_last_kept_frame():
    from rawdream.reward.generalist.judge import demo_cut

    demo = np.arange(9)[:, None, None, None] * np.ones((9, 2, 2, 3), dtype=np.uint8)
    assert [int(f[0, 0, 0]) for f in demo_cut(demo, 0.0)] == [0] * 9  # the first frame held still
    assert [int(f[0, 0, 0]) for f in demo_cut(demo, 0.5)] == [0, 1, 2, 3, 4, 4, 4, 4, 4]
    assert demo_cut(demo, 0.99).shape == demo.shape


def test_near_miss_calibration_anchors_on_the_demo_stopped_half_way(tiny_judge, pretrain_demos):
    from rawdream.reward.generalist.judge import demo_cut

    cfg = judge_config(
        "generalist",
        path=str(tiny_judge),
        reference=str(pretrain_demos),
        calibration="demo",
        calibration_cut=0.5,
    )
    judge = make_judge(cfg)
    text = "close the drawer"
    demo = judge.references.videos["drawer-close"]
    p_demo, p_half = judge.scores([demo, demo_cut(demo, 0.5)], [text, text])
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(judge.threshold(text)) == pytest.approx((logit(p_demo) + logit(p_half)) / 2, abs=1e-4)
    with pytest.raises(ValueError, match="calibration_cut=1.0"):
        judge_config("generalist", path=str(tiny_judge), calibration="demo", calibration_cut=1.0)


def test_val_tasks_are_never_trained_on_and_are_scored_after_training(
    labeled_data, pretrain_demos, tmp_path, capsys
):
    """--val_tasks holds a pretraining task out of training entirely (its videos, rows under its instruction) and
    scores the judge on it afterwards - how a recipe does on a task it has never seen."""
    from rawdream.cli import main
    from rawdream.io import load_model

    args = [*_train_judge_args(labeled_data, pretrain_demos), "--preset", "tiny"]
    args += ["--split.targets=push", "--steps=20", "--batch=8"]
    assert main([*args, "--out", str(tmp_path / "j"), "--val_tasks=[drawer-close]"]) == 0
    meta = load_model(tmp_path / "j", "judge", "")[1]
    assert meta["trained_on_tasks"] == ["reach"] and meta["held_out_tasks"] == ["drawer-close"]
    real = meta["validation_tasks"]["real"]
    assert set(real["per_task"]) == {"drawer-close"} and real["per_task"]["drawer-close"]["n"] > 0
    assert 0.0 <= real["mean_task_auroc"] <= 1.0
    assert main([*args, "--out", str(tmp_path / "k"), "--val_tasks=[push]"]) == 2
    assert "--val_tasks push: not a pretraining task" in capsys.readouterr().err


def _train_judge_args(labeled_data, pretrain_demos) -> list[str]:
    """`rawdream train-judge` on the shared labelled rollouts with their pretraining demos as references."""
    return ["train-judge", "--data", str(labeled_data), "--references", str(pretrain_demos)]


def test_an_ensemble_of_judges_calls_a_success_only_where_every_member_does(
    tiny_judge, pretrain_demos, tmp_path
):
    import torch

    from rawdream.io import load_model, save_model
    from rawdream.reward.generalist.judge import EnsembleJudge

    settings = {"reference": str(pretrain_demos), "calibration": "demo"}
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 255, (9, 64, 64, 3), dtype=np.uint8) for _ in range(12)]
    texts = ["close the drawer", "reach the red goal"] * 7
    # a second judge "trained apart": the same model with perturbed weights - perturbed harder until the two
    # disagree somewhere on these videos (how much it takes depends on the trained weights)
    _, meta, trained = load_model(tiny_judge, "judge", "")
    for scale in (0.3, 0.6, 1.0, 2.0):
        other = tmp_path / f"judge_b{scale}"
        g = torch.Generator().manual_seed(0)
        weights = {
            k: w + scale * w.std() * torch.randn(w.shape, generator=g)
            if w.is_floating_point() and w.numel() > 1
            else w
            for k, w in trained.items()
        }
        other.mkdir()
        save_model(other, "judge", weights, {k: v for k, v in meta.items() if k != "files"})
        members = [
            make_judge(judge_config("generalist", path=str(p), **settings)) for p in (tiny_judge, other)
        ]
        demo = members[0].references.videos["drawer-close"]
        votes = [m([*videos, demo, demo], texts) for m in members]
        if any(a.success != b.success for a, b in zip(*votes)):
            break
    videos += [demo, demo]
    ensemble = make_judge(judge_config("generalist", path=f"{tiny_judge}, {other}", **settings))
    assert isinstance(ensemble, EnsembleJudge) and len(ensemble.members) == 2
    verdicts = ensemble(videos, texts)
    assert [v.success for v in verdicts] == [a.success and b.success for a, b in zip(*votes)]
    assert [v.score for v in verdicts] == [min(a.score, b.score) for a, b in zip(*votes)]
    assert any(a.success != b.success for a, b in zip(*votes)), (
        "the members must disagree for the test to bite"
    )
    np.testing.assert_allclose(ensemble.scores(videos, texts), [v.score for v in verdicts], rtol=1e-6)
    # "mean": one judge whose score and threshold are the members' means
    mean = make_judge(judge_config("generalist", path=f"{tiny_judge},{other}", ensemble="mean", **settings))
    p = np.mean([m.scores(videos, texts) for m in members], axis=0)
    thr = [np.mean([m.threshold(t) for m in members]) for t in texts]
    verdicts = mean(videos, texts)
    np.testing.assert_allclose([v.score for v in verdicts], p, rtol=1e-6)
    assert [v.success for v in verdicts] == [bool(a >= b) for a, b in zip(p, thr)]
    with pytest.raises(ValueError, match="use all or mean"):
        judge_config("generalist", path=str(tiny_judge), ensemble="vote")
    # one judge listed twice is that judge
    twice = make_judge(judge_config("generalist", path=f"{tiny_judge},{tiny_judge}", **settings))
    assert [v.success for v in twice(videos, texts)] == [v.success for v in votes[0]]


@pytest.mark.parametrize(
    "rule, success, score",
    [("all", [False, False, True], [0.0, 0.0, 0.7]), ("mean", [True, False, True], [0.8, 0.0, 0.8])],
)
def test_an_ensembles_object_gate(tiny_judge, pretrain_demos, monkeypatch, rule, success, score):
    import dataclasses

    from rawdream.reward.generalist.judge import mean_progress

    # the mean over the members that gate; open (NaN) where none does
    prog = np.array([[0.2, np.nan, np.nan, 0.9], [0.8, 0.1, np.nan, np.nan]])
    np.testing.assert_allclose(mean_progress(prog), [0.5, 0.1, np.nan, 0.9])
    # two members with fixed scores and object progress (the tiny judge has no object head to gate with)
    cfg = judge_config(
        "generalist", path=f"{tiny_judge},{tiny_judge}", reference=str(pretrain_demos), ensemble=rule
    )
    ensemble = make_judge(cfg)
    gated = dataclasses.replace(ensemble.cfg, object_gate=0.5)
    ensemble.cfg = gated
    fixed = [([0.9, 0.9, 0.9], [0.2, np.nan, 0.7]), ([0.7, 0.7, 0.7], [0.8, 0.1, 0.6])]
    for member, (p, g) in zip(ensemble.members, fixed):
        member.cfg = gated
        monkeypatch.setattr(member, "_scores", lambda v, t, p=p, g=g: (np.array(p), np.array(g)))
    video = np.zeros((9, 64, 64, 3), np.uint8)
    verdicts = ensemble([video] * 3, ["close the drawer"] * 3)
    assert [v.success for v in verdicts] == success
    np.testing.assert_allclose([v.score for v in verdicts], score)
    with pytest.raises(ValueError, match="2 videos but 1 instructions"):
        ensemble([video] * 2, ["close the drawer"])
