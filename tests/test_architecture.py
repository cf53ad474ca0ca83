"""The shape of the library: no module imports in a circle, every module imports on its own, and a backend that
lives outside the library (here: in tests/) plugs in with one registration."""

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import rawdream
from rawdream.config import build, to_dict
from rawdream.policy.base import PolicyConfig as _PolicyConfig
from rawdream.reward.base import JudgeConfig

SRC = Path(rawdream.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every rawdream module ``name`` imports, at the top or inside a function (a lazy import is still a
    dependency)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_no_module_imports_in_a_circle():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    cycles, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "modules that import each other in a circle: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_graph_walker_sees_lazy_imports():
    """The test above would pass on a walker that missed function-level imports: it must not."""
    mods = _modules()
    deps = _imports("rawdream.envs.vector", mods["rawdream.envs.vector"], set(mods))
    assert "rawdream.io" in deps  # imported inside a worker function, not at the top


def _in_a_fresh_interpreter(code: str, timeout: float) -> None:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_module_imports_on_its_own():
    """In a fresh interpreter, each module is imported with no other rawdream module loaded before it."""
    names = sorted(_modules())
    code = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    for k in [k for k in sys.modules if k == 'rawdream' or k.startswith('rawdream.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    _in_a_fresh_interpreter(code, timeout=300)


# -- a judge backend from outside the library: one file, one registration ------------------------------------
@dataclass
class _CountsFramesConfig(JudgeConfig):
    """The test judge's own setting, beside the shared ones (frames, threshold, ...)."""

    min_frames: int = 5


class _CountsFrames:
    """Calls a rollout a success when its video has at least ``min_frames`` frames (a judge that needs no
    model, to show the plug-in point - not a judge anyone should train with)."""

    name, privileged = "frame-counter", False

    def __init__(self, cfg: _CountsFramesConfig):
        self.cfg = cfg

    def __call__(self, videos, instructions, **context):
        from rawdream.reward.base import Verdict

        return [Verdict(success=len(v) >= self.cfg.min_frames, score=None) for v in videos]


def test_a_judge_backend_outside_the_library_registers_itself():
    """A judge and its config class, registered together from tests/: flags build its config in any verb's
    judge section, its own setting is refused for other backends, and make_judge builds it."""
    from rawdream.config import ConfigError, build
    from rawdream.reward.base import JUDGES, make_judge, register_judge
    from rawdream.rl.dream import DreamConfig

    assert "frame-counter" not in JUDGES
    register_judge("frame-counter", config=_CountsFramesConfig)(_CountsFrames)
    try:
        cfg = build(DreamConfig, {"judge": {"backend": "frame-counter", "min_frames": 7}}).judge
        assert isinstance(cfg, _CountsFramesConfig) and cfg.min_frames == 7
        judge = make_judge(cfg)
        videos = [np.zeros((n, 8, 8, 3), np.uint8) for n in (3, 7)]
        assert [v.success for v in judge(videos, ["reach the goal"] * 2)] == [False, True]
        assert "frame-counter" in JUDGES.names()
        with pytest.raises(ConfigError, match=r"--judge.min_frames is not a setting of the generalist judge"):
            build(DreamConfig, {"judge": {"min_frames": 7}})
    finally:
        JUDGES.unregister("frame-counter")


class _Wrapped(torch.nn.Module):
    """A policy type of its own, living in tests/: it offers the Policy protocol and nothing else (no ``.model``,
    tokenizer or other processor internals), so RL can only use what the protocol promises."""

    def __init__(self, inner):
        super().__init__()
        self._inner = inner
        self.cfg = inner.cfg
        self.chunk = inner.cfg.chunk

    def processor_state(self):
        return self._inner.processor_state()

    def sample(self, obs, temperature=1.0, generator=None, noise="token"):
        return self._inner.sample(obs, temperature, generator, noise)

    def logprob(self, obs, tokens, temperature=1.0):
        return self._inner.logprob(obs, tokens, temperature)

    def logits(self, obs):
        return self._inner.logits(obs)

    def greedy(self, obs):
        return self._inner.greedy(obs)


def test_rl_needs_only_the_policy_protocol(tiny_policy, tiny_wm):
    from rawdream.config import resolve
    from rawdream.policy.base import Policy
    from rawdream.policy.train import load_policy
    from rawdream.policy.vla import POLICIES
    from rawdream.reward.base import Verdict
    from rawdream.rl.dream import DreamConfig, Dreamer
    from rawdream.world_model.train import load_world_model

    vla = load_policy(tiny_policy)
    assert isinstance(vla, Policy)
    POLICIES.register("wrapped-vla")(_Wrapped)
    try:
        policy = POLICIES.get("wrapped-vla")(vla)
        assert isinstance(policy, Policy) and not hasattr(policy, "model")
        overrides = {"task": "reach", "split.targets": ["push"], "group_size": 4, "horizon": 3}
        overrides.update({"judge.backend": "oracle", "judge.allow_oracle": True, "lr": 1e-3, "kl_coef": 0.1})
        cfg = resolve(DreamConfig, "dream", "tiny", overrides)
        dreamer = Dreamer(cfg, policy, load_world_model(tiny_wm))

        class _Alternating:
            name, privileged = "alternating", False

            def __call__(self, videos, instructions, **_):
                return [Verdict(success=i % 2 == 0) for i in range(len(videos))]

        dreamer.judge = _Alternating()
        before = [q.detach().clone() for q in policy.parameters()]
        metrics, _ = dreamer.iteration(0)  # rollout, judge, verify, advantages, update with a KL term
        assert metrics["updates"] > 0
        assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    finally:
        POLICIES._factories.pop("wrapped-vla")


def _library_outside_envs():
    """(path relative to the package, parsed module) for every library module outside envs/."""
    for path in SRC.rglob("*.py"):
        if path.parent.name != "envs":
            yield path.relative_to(SRC), ast.parse(path.read_text())


def test_meta_world_stays_inside_envs():
    """Outside envs/, code asks the task catalogues (rawdream.envs.tasks), never a simulator's own modules
    (Meta-World's, LIBERO's, robosuite's)."""
    offenders = []
    for path, tree in _library_outside_envs():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            simulators = ("metaworld", "libero", "robosuite")
            offenders += [f"{path}: {n}" for n in names if any(m in n for m in simulators)]
    assert not offenders, offenders


def test_task_names_live_in_the_catalogues():
    """No code outside envs/ names a simulator's task (a task list, a split, a family of scenes): those are the
    task catalogues' fields, so a second simulator needs no edit elsewhere. Docstrings may name tasks as examples."""
    from rawdream.envs.tasks import CATALOGUES

    tasks = {t for name in CATALOGUES.names() for t in CATALOGUES.get(name).tasks}
    splits = {s for name in CATALOGUES.names() for s in CATALOGUES.get(name).splits}
    offenders = []
    for path, tree in _library_outside_envs():
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            literal = (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            )
            if literal and (node.value in tasks or node.value in splits):
                offenders.append(f"{path}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


class _SlideEnv:
    """A whole simulator in one class, living in tests/: a red square that the action's x pushes right; the task
    succeeds when it reaches the right edge."""

    action_dim = proprio_dim = 4

    def __init__(self, task, cfg):
        from rawdream.envs import canonical_task, instruction

        self.task, self.cfg = canonical_task(task), cfg
        self.instruction, self.max_steps = instruction(self.task), cfg.max_steps

    def reset(self, seed):
        self.x, self.t = float(np.random.default_rng(seed).uniform(0.1, 0.3)), 0
        return self._obs(), self._info(False)

    def step(self, action, render=True):
        from rawdream.envs import check_action

        self.x = min(1.0, self.x + 0.05 * float(check_action(action, 4)[0]))
        self.t += 1
        success = self.x > 0.9
        terminated = success and self.cfg.end_on_success
        return (
            self._obs(render),
            0.0,
            terminated,
            self.t >= self.max_steps and not terminated,
            self._info(success),
        )

    def render(self):
        s = self.cfg.image_size
        img = np.zeros((s, s, 3), np.uint8)
        c = int(self.x * (s - 4))
        img[s // 2 - 2 : s // 2 + 2, c : c + 4, 0] = 255
        return img

    def _obs(self, render=True):
        proprio = np.array([self.x, 0, 0, 0], np.float32)
        return {
            "image": self.render() if render else None,
            "proprio": proprio,
            "instruction": self.instruction,
        }

    def _info(self, success):
        return {
            "success": success,
            "state": np.array([self.x]),
            "object_position": np.array([self.x, 0.0, 0.0]),
        }

    def close(self):
        pass


@pytest.fixture
def slide_sim():
    """The slide simulator registered for one test (its catalogue and its Env), unregistered after."""
    from rawdream.envs.base import ENVS
    from rawdream.envs.tasks import CATALOGUES, TaskCatalogue, register_catalogue

    register_catalogue("slide")(
        TaskCatalogue(
            backend="slide",
            instructions={
                "slide-right": ("push the square to the right",),
                "stay": ("keep the square still",),
            },
            splits={"slide-heldout": ("slide-right",)},
            normalise=lambda name: name.strip().lower(),
        )
    )
    ENVS.register("slide")(_SlideEnv)
    yield "slide"
    CATALOGUES._factories.pop("slide")
    ENVS._factories.pop("slide")


def test_a_simulator_outside_the_library_registers_itself(slide_sim, tiny_policy, tmp_path):
    """A second simulator (LIBERO's, a lab's own) is one file: its task catalogue and its Env, each registered.
    Names, instructions and splits resolve through the catalogue, a split never mixes two simulators, and the
    evaluation harness runs a policy in it by --env.backend alone."""
    from rawdream.envs import (
        Env,
        EnvConfig,
        backend_of,
        canonical_task,
        instruction,
        make_env,
        tasks_of,
    )
    from rawdream.eval.success import EvalPolicyConfig, evaluate_policy
    from rawdream.policy.train import load_policy
    from rawdream.splits import SplitConfig, resolve_split

    assert backend_of("Slide-Right") == "slide" and canonical_task("Slide-Right") == "slide-right"
    assert instruction("slide-right") == "push the square to the right" and tasks_of("slide") == (
        "slide-right",
        "stay",
    )
    split = resolve_split(SplitConfig(name="slide-heldout"))
    assert (split.backend, split.targets, split.pretrain) == ("slide", ("slide-right",), ("stay",))
    with pytest.raises(ValueError, match="mixes tasks of simulators metaworld, slide"):
        resolve_split(SplitConfig(targets=["stay", "drawer-open"]))
    env_cfg = EnvConfig(backend="slide", max_steps=16)
    assert isinstance(make_env("slide-right", env_cfg), Env)
    cfg = EvalPolicyConfig(
        split=SplitConfig(name="slide-heldout"), env=env_cfg, tasks=["targets"], episodes=3, workers=0
    )
    report = evaluate_policy(load_policy(tiny_policy), cfg, tmp_path, progress=False)
    assert len(report["tasks"]["slide-right"]["episode_results"]) == 3


class _PushRight:
    """A policy that always pushes right at full speed: the ``sample`` call of the Policy protocol, scripted."""

    chunk = 8

    def eval(self):
        return self

    def sample(self, obs, temperature, generator=None, noise="token"):
        n = len(obs["image"])
        actions = np.zeros((n, self.chunk, 4), np.float32)
        actions[..., 0] = 1.0
        return actions, torch.zeros((n, self.chunk, 4), dtype=torch.long), torch.zeros((n, self.chunk, 4))


@pytest.mark.parametrize("end_at_success", [True, False])
def test_the_one_simulator_rollout_loop_ends_at_success_or_runs_the_horizon(slide_sim, end_at_success):
    """``simulate`` (online RL, on-policy reward fidelity and the judge's policy data all run it): the square
    starts at x in [0.1, 0.3] and moves 0.05 a step, so it passes 0.9 in the second or third chunk of 8 steps.
    Ending at success: later chunks are dead (alive False, nothing executed, the last frame and state held);
    otherwise every rollout runs all 6 chunks and stays successful at the right edge."""
    from rawdream.envs import EnvConfig
    from rawdream.envs.vector import make_vector_env
    from rawdream.rl.rollouts import simulate

    env = EnvConfig(backend="slide", max_steps=48, end_on_success=end_at_success)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    with make_vector_env(3, env, num_workers=0) as venv:
        starts = [("slide-right", s) for s in (0, 1, 2)]
        buf = simulate(_PushRight(), venv, starts, ["push"] * 3, 6, 1.0, gens, end_at_success=end_at_success)
    x = buf["state"][..., 0]  # (N, H + 1): where the square was after each chunk
    first = (buf["chunk_success"]).argmax(1)  # the chunk in which each rollout first succeeded
    assert buf["success"].all() and set(first.tolist()) <= {1, 2}
    assert buf["video"].shape[:2] == (3, 7) and buf["actions"].shape == (3, 6, 8, 4)
    for i, f in enumerate(first):
        assert x[i, f + 1] > 0.9 >= x[i, f]
        if end_at_success:
            assert buf["alive"][: f + 1, i].all() and not buf["alive"][f + 1 :, i].any()
            assert (buf["actions"][i, f + 1 :] == 0).all() and (buf["actions"][i, : f + 1, :, 0] == 1).all()
            assert (x[i, f + 1 :] == x[i, f + 1]).all()  # the state after the ending chunk is held
            assert all((buf["video"][i, t] == buf["video"][i, f + 1]).all() for t in range(f + 1, 7))
        else:
            assert buf["alive"][:, i].all() and (buf["actions"][i, ..., 0] == 1).all()
            assert buf["chunk_success"][i, f:].all() and x[i, -1] == 1.0
    assert not end_at_success or not buf["chunk_success"][np.arange(3), first + 1].any()


class _PixelDenoiser(torch.nn.Module):
    """The smallest denoiser, living in tests/: 1x1 convolutions over the noisy latent and the context, modulated by
    the library's action/proprio/noise-level conditioning. It implements the two calls the world model makes."""

    def __init__(self, cfg, channels, size):
        from rawdream.nn import mlp
        from rawdream.world_model.dynamics import Conditioning, LevelEmbed

        super().__init__()
        self.cond, self.time = Conditioning(cfg), LevelEmbed(cfg.cond_dim)
        self.inp = torch.nn.Conv2d(channels * (cfg.context + 2), 32, 1)
        self.film = torch.nn.Linear(cfg.cond_dim, 64)
        self.out = torch.nn.Conv2d(32, channels, 1)
        self.proprio_head = mlp(cfg.cond_dim, cfg.cond_dim, cfg.proprio_dim)

    def encode_context(self, ctx, anchor, actions, proprio, ctx_level, anchor_level, proprio_next=None):
        cond = self.cond(actions, proprio, ctx_level, anchor_level)
        cache = {
            "cond": cond,
            "ctx": torch.cat([ctx.flatten(1, 2), anchor], 1),
            "proprio_delta": self.proprio_head(cond),
        }
        self.cond.target(cache, proprio, proprio_next)
        return cache

    def denoise(self, z, tau, cache):
        scale, shift = self.film(cache["cond"] + self.time(tau))[:, :, None, None].chunk(2, dim=1)
        h = self.inp(torch.cat([z, cache["ctx"]], 1))
        return self.out(torch.nn.functional.silu(h * (1 + scale) + shift))


def test_a_denoiser_outside_the_library_trains_and_imagines(play_data, tmp_path):
    """A new world-model backbone is one module and one registration: `pretrain-wm --model.dynamics.arch=pixel`
    trains it, the saved world model names it, and loading it imagines through it."""
    from rawdream.cli import main
    from rawdream.world_model.dynamics import DENOISERS
    from rawdream.world_model.train import load_world_model

    DENOISERS.register("pixel")(_PixelDenoiser)
    try:
        out = tmp_path / "wm"
        argv = ["pretrain-wm", "--data", str(play_data), "--out", str(out), "--preset", "tiny"]
        assert main([*argv, "--model.dynamics.arch=pixel", "--dyn_steps=20"]) == 0
        wm = load_world_model(out)
        assert isinstance(wm.dynamics, _PixelDenoiser)
        size = wm.cfg.image_size
        frames = torch.zeros(2, size, size, 3, dtype=torch.uint8)
        actions = torch.zeros(2, 3, wm.cfg.dynamics.chunk, 4)
        imagined = wm.rollout(frames, torch.zeros(2, 4), actions, seeds=[0, 1])
        assert imagined["frames"].shape == (2, 4, size, size, 3)
    finally:
        DENOISERS._factories.pop("pixel")


def test_an_unknown_backend_names_the_flag_and_the_choices():
    from rawdream.envs import EnvConfig, make_env
    from rawdream.reward.base import JudgeConfig, make_judge

    with pytest.raises(ValueError, match=r"--judge.backend.*generalist, hf, openai, oracle"):
        make_judge(JudgeConfig(backend="gpt-judge"))
    with pytest.raises(
        ValueError, match=r"unknown simulator backend 'isaac' \(--env.backend\); available: libero, metaworld"
    ):
        make_env("reach", EnvConfig(backend="isaac"))
    with pytest.raises(ValueError, match="'reach'.*(is not a LIBERO task|LIBERO is not installed)"):
        make_env("reach", EnvConfig(backend="libero"))


def test_builtin_backends_are_imported_only_when_asked_for():
    """The protocol modules do not import their implementations (that is what kept them in a circle)."""
    code = (
        "import sys\n"
        "import rawdream.reward.base, rawdream.envs.base\n"
        "loaded = [m for m in ('rawdream.reward.hf', 'rawdream.reward.openai', 'rawdream.envs.metaworld') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from rawdream.reward.base import JUDGES\n"
        "JUDGES.get('openai')\n"
        "assert 'rawdream.reward.openai' in sys.modules\n"
    )
    _in_a_fresh_interpreter(code, timeout=120)


def test_registered_denoisers_build_through_the_registry():
    from rawdream.world_model.dynamics import (
        DENOISERS,
        DiTDenoiser,
        DynamicsConfig,
        UNetDenoiser,
        build_denoiser,
    )

    assert DENOISERS.names() == ["dit", "unet", "wan"]  # wan: imported (with diffusers) only when asked for
    cfg = DynamicsConfig(arch="unet")
    assert isinstance(build_denoiser(cfg, 4, 8), UNetDenoiser)
    importlib.import_module("rawdream.world_model.model")
    with pytest.raises(ValueError, match="--model.dynamics.arch"):
        build_denoiser(DynamicsConfig(arch="cosmos"), 4, 8)
    assert DiTDenoiser is DENOISERS.get("dit")


# -- the pipeline's stage bookkeeping ------------------------------------------------------------------------
def test_a_stage_is_skipped_when_unchanged_and_rebuilt_with_its_dependants_when_its_config_changes(tmp_path):
    from rawdream.pipeline import Runner

    calls: list[str] = []

    def writer(name):
        def fn(d):
            d.mkdir(parents=True, exist_ok=True)
            (d / "out.txt").write_text(name)
            calls.append(name)
            return {"wrote": name}

        return fn

    def run(data_cfg, model_cfg):
        r = Runner(tmp_path, progress=False, log=lambda s: None)
        r.stage("data", {"episodes": data_cfg}, [], writer("data"))
        r.stage("model", {"steps": model_cfg}, ["data"], writer("model"))
        return r

    run(10, 100)
    assert calls == ["data", "model"]
    r = run(10, 100)  # nothing changed: both skipped, their summaries read back
    assert calls == ["data", "model"] and all(x.skipped for x in r.results)
    assert r.results[1].summary == {"wrote": "model"}
    (tmp_path / "model" / "stale.txt").write_text("from the old config")
    run(10, 200)  # the model's config changed: it alone is rebuilt, from an empty folder
    assert calls == ["data", "model", "model"] and not (tmp_path / "model" / "stale.txt").exists()
    run(20, 200)  # an input changed: the data and everything that reads it
    assert calls == ["data", "model", "model", "data", "model"]


def _recording_stage(tmp_path, name, calls):
    """A stage ``name`` of a fresh Runner on ``tmp_path`` per call, appending to ``calls`` each time it runs."""
    from rawdream.pipeline import Runner

    def stage(cfg):
        r = Runner(tmp_path, progress=False, log=lambda s: None)
        r.stage(name, cfg, [], lambda d: calls.append(1) or d.mkdir(parents=True, exist_ok=True) or {})

    return stage


def test_a_key_added_later_at_its_default_keeps_recorded_stages(tmp_path):
    """HASH_QUIET: the judge's --object_heatmap and --object_erase, added after runs were recorded, leave a recorded
    judge stage valid at their defaults (0) and rerun it when set."""
    from rawdream.reward.generalist.train import TrainJudgeConfig

    calls = []
    added = ("object_heatmap", "object_erase", "keypoint_play", "keypoint_play_batch")
    before = {k: v for k, v in to_dict(TrainJudgeConfig()).items() if k not in added}  # as recorded
    judge = _recording_stage(tmp_path, "judge", calls)
    judge(before)
    judge(TrainJudgeConfig())
    assert calls == [1]
    judge(TrainJudgeConfig(object_heatmap=1.0))
    assert calls == [1, 1]
    judge(TrainJudgeConfig(object_heatmap=1.0, keypoint_play="play"))
    assert calls == [1, 1, 1]
    # the same for collection's --frac_retreat: a play/labeled/demos stage recorded before it stays valid at 0
    from rawdream.data.collect import CollectConfig

    collected = []
    labeled = _recording_stage(tmp_path, "data/labeled", collected)
    labeled({k: v for k, v in to_dict(CollectConfig(kind="labeled")).items() if k != "frac_retreat"})
    labeled(CollectConfig(kind="labeled"))
    assert collected == [1]
    labeled(CollectConfig(kind="labeled", frac_expert=0.3, frac_retreat=0.1))
    assert collected == [1, 1]


def test_a_readout_key_added_later_keeps_recorded_dream_stages(tmp_path):
    """HASH_QUIET with a section's key: the judge readout's object_gate_space / _min_px / object_fade_min, added
    after runs were recorded, leave a recorded dream stage valid at their defaults and rerun it when set."""
    from rawdream.rl.dream import DreamConfig
    from rawdream.world_model.model import SamplerConfig

    calls = []
    recorded = to_dict(DreamConfig())
    for key in (
        "object_gate_space",
        "object_gate_min_px",
        "object_fade_min",
        "calibration_wm",
        "calibration_draws",
    ):
        recorded["judge"].pop(key)
    for key in ("dnv_sampler", "dnv_flip"):  # DNV's redraw sampler and what a flip does, added at stop 45
        recorded.pop(key)
    dream = _recording_stage(tmp_path, "dream", calls)
    dream(recorded)
    dream(DreamConfig())
    assert calls == [1]
    changed = DreamConfig()
    changed.judge.object_gate_space = "image"
    dream(changed)
    assert calls == [1, 1]
    dream(DreamConfig())  # back to the defaults: a rerun
    assert calls == [1, 1, 1]
    dream(DreamConfig(dnv_flip="failure"))  # each new key, set, reruns
    assert calls == [1, 1, 1, 1]
    dream(DreamConfig(dnv_sampler=SamplerConfig(context_level=600.0)))
    assert calls == [1, 1, 1, 1, 1]


def test_a_world_model_key_added_later_keeps_recorded_world_model_stages(tmp_path):
    """HASH_QUIET two sections deep: the flow's object_region_weight / _sigma, added after the main job's world
    models were recorded, leave them valid at their defaults and retrain when set."""
    from rawdream.world_model.train import PretrainWMConfig

    calls = []
    recorded = to_dict(PretrainWMConfig())
    for key in ("object_region_weight", "object_region_sigma"):
        recorded["model"]["flow"].pop(key)
    wm = _recording_stage(tmp_path, "wm", calls)
    wm(recorded)
    wm(PretrainWMConfig())
    assert calls == [1]
    changed = PretrainWMConfig()
    changed.model.flow.object_region_weight = 8.0
    wm(changed)
    assert calls == [1, 1]


def test_a_judge_key_added_later_keeps_recorded_check_and_eval_judge_stages(tmp_path):
    """The judge-check and eval/judge stages hash plain dicts: their ``quiet`` keys (READOUT_ADDED_LATER, the
    judge's object_fade_min) leave a stage recorded before the key existed valid at its default, not when set."""
    from rawdream.pipeline import READOUT_ADDED_LATER, Runner

    calls = []

    def stage(judge):
        r = Runner(tmp_path, progress=False, log=lambda s: None)
        fn = lambda d: calls.append(1) or d.mkdir(parents=True, exist_ok=True) or {}  # noqa: E731
        r.stage("eval/judge", {"episodes": 4, "judge": judge}, [], fn, quiet=READOUT_ADDED_LATER)

    stage({"object_gate": 0.5})  # as recorded
    stage({"object_gate": 0.5, "object_fade_min": 0.0})
    assert calls == [1]
    stage({"object_gate": 0.5, "object_fade_min": 0.5})
    assert calls == [1, 1]
    # the imagined calibration's keys (stop 43), in the stage's judge and in the check's own dream section
    new = {"calibration_wm": "", "calibration_draws": 4}
    calls.clear()
    (tmp_path / "check").mkdir()
    r = Runner(tmp_path / "check", progress=False, log=lambda s: None)
    fn = lambda d: calls.append(1) or d.mkdir(parents=True, exist_ok=True) or {}  # noqa: E731

    def check(judge):
        config = {"check": {"dream": {"judge": judge}}, "judge": judge}
        r.stage("judge_check", config, [], fn, quiet=READOUT_ADDED_LATER)

    check({"object_gate": 0.5})  # as recorded
    check({"object_gate": 0.5, **new})
    assert calls == [1]
    check({"object_gate": 0.5, **new, "calibration_draws": 8})
    assert calls == [1, 1]
    # the check's RL runs gained DNV's redraw sampler and flip rule (stop 45): quiet at their defaults only
    calls.clear()

    def check_dnv(**dnv):
        config = {"check": {"dream": {"judge": {"object_gate": 0.5}, **dnv}}, "judge": {"object_gate": 0.5}}
        r.stage("judge_check", config, [], fn, quiet=READOUT_ADDED_LATER)

    check_dnv()  # as recorded
    check_dnv(dnv_sampler=None, dnv_flip="unreliable")
    assert calls == [1]
    check_dnv(dnv_sampler=None, dnv_flip="failure")
    assert calls == [1, 1]


@dataclass
class _SteadyConfig(_PolicyConfig):
    speed: float = 1.0  # a setting of this type only


class _Steady(torch.nn.Module):
    """A whole policy type in tests/: pushes along x at ``cfg.speed`` (+ a learnable offset, so it has weights to
    save). Token policies' machinery (bins, tokenizer) is none of its business."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg, self.chunk = cfg, cfg.chunk
        self.offset = torch.nn.Parameter(torch.zeros(cfg.action_dim))

    def greedy(self, obs):
        a = np.zeros((len(obs["proprio"]), self.chunk, self.cfg.action_dim), np.float32)
        a[..., 0] = self.cfg.speed
        return a + self.offset.detach().numpy()

    def sample(self, obs, temperature=1.0, generator=None, noise="token"):
        a = self.greedy(obs)
        return a, torch.zeros(a.shape, dtype=torch.long), torch.zeros(a.shape)

    def logprob(self, obs, tokens, temperature=1.0):
        return torch.zeros(tokens.shape) + 0 * self.offset.sum(), torch.zeros(tokens.shape)

    def logits(self, obs):
        return torch.zeros((len(obs["proprio"]), self.chunk, self.cfg.action_dim, 1))

    def processor_state(self):
        return {"units": "simulator actions"}

    @classmethod
    def from_saved(cls, cfg, processor, state_dict):
        policy = cls(cfg)
        policy.load_state_dict(state_dict)
        return policy


def test_a_policy_type_outside_the_library_registers_itself(slide_sim, tmp_path):
    """A new policy type is one file: its class and its config, registered; --policy.type selects the config (and
    refuses another type's setting by name), save_policy / load_policy store and restore it, and the evaluation
    harness runs it through the protocol alone."""
    from rawdream.config import ConfigError
    from rawdream.envs import EnvConfig
    from rawdream.eval.success import EvalPolicyConfig, evaluate_policy
    from rawdream.policy.base import POLICIES, Policy, load_policy, policy_config, save_policy
    from rawdream.splits import SplitConfig

    POLICIES.register("steady", config=_SteadyConfig)(_Steady)
    try:
        cfg = policy_config("steady", speed=0.5)
        assert isinstance(cfg, _SteadyConfig) and cfg.speed == 0.5
        with pytest.raises(
            ConfigError, match=r"--policy.bins is not a setting of the steady policy.*type=vla"
        ):
            policy_config("steady", bins=16)
        policy = _Steady(build(_PolicyConfig, {"type": "steady", "speed": 1.0}))
        assert isinstance(policy, Policy)
        with torch.no_grad():
            policy.offset[1] = 0.25
        save_policy(policy, tmp_path / "steady", {"note": "scripted"})
        back = load_policy(tmp_path / "steady")
        assert type(back) is _Steady and back.cfg.speed == 1.0 and back.offset[1].item() == 0.25
        ecfg = EvalPolicyConfig(
            split=SplitConfig(name="slide-heldout"),
            env=EnvConfig(backend="slide", max_steps=16),
            tasks=["targets"],
            episodes=2,
            workers=0,
        )
        report = evaluate_policy(back, ecfg, tmp_path / "eval", progress=False)
        assert report["tasks"]["slide-right"]["success_rate"] == 1.0  # full speed right reaches the edge
    finally:
        POLICIES.unregister("steady")
