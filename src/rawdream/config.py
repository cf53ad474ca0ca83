"""Dataclass configs, YAML presets and dotted command-line overrides.

Every stage has one dataclass config. Its field defaults are the base; ``configs/presets.yaml`` holds named
presets per stage (``tiny`` for tests, ``default`` for this 2-core machine, ``large`` for a GPU) that overlay
the defaults; command-line flags ``--a.b=value`` overlay the preset. Every field is reachable as a flag, as in
DreamerV3. The resolved config is written beside every output (``config.yaml``) so a run can be reproduced.

A section with pluggable parts (the judge) is a *choice*: its shared config class names the key that selects a
part (``CHOICE_KEY = "backend"``) and a ``config_for(name)`` that returns the chosen part's own config class (a
subclass registered with the part, in the part's file), which is what gets built - LeRobot's ``--policy.type=``
pattern. A key that belongs to another part is refused, naming the parts that have it (``unknown_key_hint``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value the user gave is wrong; the message names it and the fix."""


def presets_file() -> dict[str, Any]:
    text = resources.files("rawdream").joinpath("configs/presets.yaml").read_text()
    return yaml.safe_load(text) or {}


def preset_names(stage: str) -> list[str]:
    return sorted(k for k in (presets_file().get(stage) or {}) if not k.startswith("_"))


def load_preset(stage: str, preset: str) -> dict[str, Any]:
    stages = presets_file()
    if stage not in stages:
        raise ConfigError(f"no presets for stage {stage!r}; known stages: {', '.join(sorted(stages))}")
    presets = stages[stage] or {}
    names = preset_names(stage)
    if preset not in names:
        hint = difflib.get_close_matches(preset, names, n=3)
        raise ConfigError(
            f"unknown preset {preset!r} for {stage}; choose one of: {', '.join(names)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    # "_base" holds the stage's own defaults (e.g. demos render every step); the preset overlays it
    return merge_dicts(dict(presets.get("_base") or {}), dict(presets[preset] or {}))


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn ``['--a.b=1', '--c', 'x']`` into ``{'a.b': 1, 'c': 'x'}``; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}; config overrides look like --key.sub=value")
        key = arg[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            raw = args[i + 1]
            i += 1
        else:
            raw = "true"  # a bare flag switches a boolean on
        out[key.replace("-", "_")] = yaml.safe_load(raw) if raw != "" else ""
        i += 1
    return out


def nest_overrides(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} goes inside {part!r}, which is not a section")
        node[parts[-1]] = value
    return nested


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            key = getattr(tp, "CHOICE_KEY", None)
            if key is None or type(value) is chosen_class(tp, {key: getattr(value, key)}):
                return value
            # e.g. JudgeConfig(backend="openai") built in code: rebuilt as the openai judge's own config
            return _build(tp, to_dict(value), where + ".")
        if not isinstance(value, dict):
            raise ConfigError(f"{where} is a section; give sub-keys like --{where}.<key>=..., not {value!r}")
        return _build(tp, value, where + ".")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]  # --tasks=a,b,c
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            raise ConfigError(f"{where} must be a string, got null")
        return str(value)
    return value


def _in_range(value: float, spec: str) -> bool:
    """``>=0``, ``>=1``, ``>0``, ``[0,1]``, ``(0,1]``, ``[0,1)``: the allowed values of a number."""
    spec = spec.replace(" ", "")
    if spec.startswith(">="):
        return value >= float(spec[2:])
    if spec.startswith(">"):
        return value > float(spec[1:])
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    above = value >= lo if spec[0] == "[" else value > lo
    below = value <= hi if spec[-1] == "]" else value < hi
    return above and below


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Refuse a number outside its meaning: a config class lists ``RANGES = {field: spec}`` or
    ``{field: (spec, what-the-boundary-means)}``; the message names the flag, the value and the allowed range."""
    for name, spec in getattr(type(obj), "RANGES", {}).items():
        spec, note = spec if isinstance(spec, tuple) else (spec, "")
        value = getattr(obj, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if value != value or not _in_range(value, spec):  # NaN is in no range
            if spec.startswith(">"):
                allowed = spec.replace(">=", ">= ") if spec.startswith(">=") else spec.replace(">", "> ", 1)
            else:
                allowed = "in " + spec.replace(",", ", ")
            raise ConfigError(
                f"--{prefix}{name}={value} is out of range: must be {allowed}{f' ({note})' if note else ''}"
            )


def chosen_class(cls: type[T], data: dict[str, Any]) -> type[T]:
    """For a choice section (see the module docstring), the config class of the part ``data`` selects."""
    key = getattr(cls, "CHOICE_KEY", None)
    if key is None:
        return cls
    name = data.get(key, next(f.default for f in dataclasses.fields(cls) if f.name == key))  # type: ignore[arg-type]
    return cls.config_for(name)  # type: ignore[attr-defined]


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    cls = chosen_class(cls, data)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            hint_of = getattr(cls, "unknown_key_hint", None)  # a choice: the key may be another part's
            other = hint_of(key, data) if hint_of else None
            if other:
                raise ConfigError(f"--{prefix}{key} {other}")
            # LeRobot's name for a section's pluggable part is `type`; ours is `backend` where that exists
            close = ["backend"] if key == "type" and "backend" in fields else []
            close = close or difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean --{prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown config key --{prefix}{key}{hint}; valid keys: {', '.join(sorted(fields))}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            try:
                kwargs[name] = _coerce(data[name], hints[name], prefix + name)
            except ConfigError as e:
                mode = f"{name}_mode"  # --env sim, from before `env` was a section too: name the key meant
                if mode in fields and not isinstance(data[name], dict):
                    raise ConfigError(f"{e}; did you mean --{prefix}{mode}={data[name]}?") from None
                raise
        elif (
            dataclasses.is_dataclass(hints[name])
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            kwargs[name] = _build(hints[name], {}, prefix + name + ".")
    obj = cls(**kwargs)
    check_ranges(obj, prefix)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    _check_simulator(obj, prefix)
    return obj


def _envs_inside(obj: Any, prefix: str) -> list[tuple[str, Any]]:
    """(where, env section) for every simulator section inside ``obj``, at any depth (``on_policy.env.``)."""
    out = []
    for f in dataclasses.fields(obj) if dataclasses.is_dataclass(obj) else ():
        value = getattr(obj, f.name)
        if f.name == "env" and hasattr(value, "backend"):
            out.append((f"{prefix}env.", value))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type) and not hasattr(value, "split"):
            # a section with a split of its own was checked against that split when it was built
            out += _envs_inside(value, f"{prefix}{f.name}.")
    return out


def _check_simulator(obj: Any, prefix: str) -> None:
    """A config with a split must simulate the split's tasks in every simulator section it holds, nested ones
    included (LIBERO tasks need LIBERO)."""
    split = getattr(obj, "split", None)
    if split is None or not hasattr(split, "targets"):
        return
    envs = _envs_inside(obj, prefix)
    if not envs:
        return
    from rawdream.splits import resolve_split

    backend = resolve_split(split).backend
    for where, env in envs:
        if env.backend != backend:
            from rawdream.envs.tasks import catalogue

            theirs = ", ".join(catalogue(env.backend).splits) or "--split.targets with its tasks"
            raise ConfigError(
                f"--{where}backend={env.backend} cannot simulate split {split.name!r}, whose tasks are "
                f"{backend} tasks; add --{where}backend={backend}, or choose a split of {env.backend}'s tasks "
                f"(--{prefix}split.name: {theirs})"
            )


def build(cls: type[T], data: dict[str, Any] | None = None, prefix: str = "") -> T:
    """Build a config dataclass from a (possibly nested) dict, refusing unknown keys with a suggestion;
    ``prefix`` is where the section sits, for messages (``"judge."``)."""
    return _build(cls, data or {}, prefix)


def resolve(
    cls: type[T], stage: str, preset: str | None = "default", overrides: dict[str, Any] | None = None
) -> T:
    """Dataclass defaults <- the stage's preset (``default`` unless named) <- dotted overrides."""
    data: dict[str, Any] = load_preset(stage, preset or "default")
    if overrides:
        data = merge_dicts(data, nest_overrides(overrides))
    return build(cls, data)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def config_hash(cfg: Any) -> str:
    """Content hash of a resolved config (used to decide whether a stage's outputs are stale)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_config(cfg: Any, out_dir: str | Path, name: str = "config.yaml", extra: dict | None = None) -> Path:
    """Write the resolved config beside a stage's outputs (atomically)."""
    from rawdream.io import atomic_write_text

    data = {"config_type": type(cfg).__name__, **to_dict(cfg)}
    if extra:
        data.update(extra)
    data = _redacted(data)
    path = Path(out_dir) / name
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def _redacted(value: Any) -> Any:
    """Credentials inside URLs never reach a saved config (``http://user:KEY@host`` -> ``http://***@host``)."""
    from rawdream.io import redact_url

    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return redact_url(value) if isinstance(value, str) and "://" in value else value


def load_config(cls: type[T], path: str | Path) -> T:
    data = yaml.safe_load(Path(path).read_text()) or {}
    data.pop("config_type", None)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return build(cls, {k: v for k, v in data.items() if k in names})
