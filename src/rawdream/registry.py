"""Plug-in points: a name -> factory table per kind of part (simulator, judge, world-model denoiser, policy).

A backend is one file that registers itself on import (``@JUDGES.register("mine")``); nothing else changes.
A backend with settings of its own registers their config class with it (``register("mine", config=MineConfig)``,
a subclass of the kind's shared config): the config system builds that class when the section names the backend,
so a setting of another backend is refused by name instead of silently ignored.
The built-in backends are named here by module path and imported the first time their name is asked for, so
the module that defines a protocol never imports its implementations (no import cycles) and an optional
dependency (transformers, ray) is only imported by the backend that needs it. A plug-in outside the library
(a test double, a lab's own simulator) registers the same way from its own module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


class Registry:
    def __init__(self, kind: str, flag: str, builtin: dict[str, str], config: type | None = None):
        self.kind = kind  # what is registered, for messages ("judge backend")
        self.flag = flag  # the option that selects it, for messages ("--judge.backend")
        self._builtin = dict(builtin)  # name -> module that registers it on import
        self._factories: dict[str, Callable[..., Any]] = {}
        self._default_config = config  # the shared config, for backends without settings of their own
        self._configs: dict[str, type] = {}

    def register(
        self, name: str, config: type | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            self._factories[name] = factory
            if config is not None:
                self._configs[name] = config
            return factory

        return deco

    def unregister(self, name: str) -> None:
        """Remove a plug-in (tests register theirs for one test)."""
        self._factories.pop(name, None)
        self._configs.pop(name, None)

    def config(self, name: str) -> type:
        """The config class of backend ``name``: its own, or the kind's shared one."""
        self.get(name)  # imports a built-in backend, refuses an unknown name
        return self._configs.get(name, self._default_config)

    def owners_of(self, key: str) -> list[str]:
        """The registered names whose config class has the setting ``key`` (for "choose one that has it")."""
        from dataclasses import fields

        return [n for n in self.names() if key in {f.name for f in fields(self.config(n))}]

    def names(self) -> list[str]:
        return sorted(set(self._factories) | set(self._builtin))

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._factories and name in self._builtin:
            importlib.import_module(self._builtin[name])
        if name not in self._factories:
            raise ValueError(
                f"unknown {self.kind} {name!r} ({self.flag}); available: {', '.join(self.names())}"
            )
        return self._factories[name]

    def __contains__(self, name: str) -> bool:
        return name in self._factories or name in self._builtin
