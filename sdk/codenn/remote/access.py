"""Who may call a codenn server, and what each caller may do: the token file.

A host serves several local providers at once; a token proves which provider is calling, and
the provider's *rights* say which served models it may run (``infer``) and which it may
split-train (``train``). Training changes the links every other caller then gets answers from,
so it is never granted by accident.

The token file is JSON, one entry per provider::

    {
      "alexnet": {"token": "a-long-random-secret", "infer": ["local:alexnet"], "train": ["local:alexnet"]},
      "resnet":  "another-long-random-secret"
    }

A right is a list of patterns; a model matches when one pattern does:

- ``"*"``: every served model;
- ``"local:SERVICE"``: every path whose local service is SERVICE (the provider's own paths);
- a model name (the URL slug) or a path spec (``"alexnet[:2] > mobilenet_v2[3:5] > alexnet[6:]"``).

An entry that is only a token (the format before rights existed) gets the default rights
:data:`DEFAULT_INFER` and :data:`DEFAULT_TRAIN`: infer every model, train only the paths whose
local service carries the provider's own name.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Literal, Protocol

from codenn.errors import ConfigError, PathSpecError
from codenn.paths.spec import PathSpec, slug

Action = Literal["infer", "train"]
DEFAULT_INFER = ("*",)
"""Rights of a token-only entry to infer: every served model."""
DEFAULT_TRAIN = ("local:{provider}",)
"""Rights of a token-only entry to train: the paths whose local service is named like the provider."""
MIN_TOKEN_LENGTH = 8
_KEYS = ("token", "infer", "train")


class NamedModel(Protocol):
    """What a right is matched against: a served model's name and its local service."""

    @property
    def name(self) -> str: ...

    @property
    def local_name(self) -> str: ...


@dataclass(frozen=True)
class Provider:
    """One registered caller: its name, its bearer token and its rights (patterns)."""

    name: str
    token: str
    infer: tuple[str, ...] | None = None
    train: tuple[str, ...] | None = None

    def __post_init__(self) -> None:  # None: the documented defaults
        if self.infer is None:
            object.__setattr__(self, "infer", DEFAULT_INFER)
        if self.train is None:
            object.__setattr__(self, "train", tuple(p.format(provider=self.name) for p in DEFAULT_TRAIN))

    def may(self, action: Action, model: NamedModel) -> bool:
        return any(_matches(p, model) for p in (self.infer if action == "infer" else self.train) or ())

    def describe(self) -> str:
        return f"{self.name}: infer {list(self.infer or ()) or 'nothing'}, train {list(self.train or ()) or 'nothing'}"


def _matches(pattern: str, model: NamedModel) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("local:"):
        return model.local_name == pattern.removeprefix("local:")
    return pattern == model.name or slug(pattern) == model.name


class AccessList:
    """The registered providers; finds the caller of a bearer token in constant time per entry."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self.providers = {p.name: p for p in providers}
        if not self.providers:
            raise ConfigError("a token file needs at least one provider, e.g. {\"alexnet\": \"a-long-random-secret\"}")

    def caller(self, token: str) -> Provider | None:
        """The provider whose token this is (every entry is compared, so timing reveals nothing)."""
        found = None
        for provider in self.providers.values():
            if hmac.compare_digest(token.encode(), provider.token.encode()):
                found = provider
        return found

    def unmatched(self, models: Iterable[NamedModel]) -> list[str]:
        """Patterns written in the file that grant nothing among ``models`` (a typo a host operator
        wants to hear of); the default ``local:PROVIDER`` is not reported."""
        served = list(models)
        out = []
        for p in self.providers.values():
            default = tuple(d.format(provider=p.name) for d in DEFAULT_TRAIN)
            for action, patterns in (("infer", p.infer), ("train", p.train)):
                out += [f"{p.name}.{action}: {pat!r}" for pat in patterns or ()
                        if not any(_matches(pat, m) for m in served) and not (action == "train" and pat in default)]
        return out


def access_from(data: Any, where: str = "tokens") -> AccessList:
    """Validate a parsed token file (or a mapping given in code); :class:`ConfigError` says what is wrong."""
    if isinstance(data, AccessList):
        return data
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{where} must map each provider's name to its token or to "
                          '{"token": ..., "infer": [...], "train": [...]}, e.g. {"alexnet": "a-long-random-secret"}; '
                          f"got {type(data).__name__ if data else data!r}")
    providers = []
    for name, entry in data.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: provider names must be non-empty strings, got {name!r}")
        if isinstance(entry, str):
            entry = {"token": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: entry {name!r} must be a token string or an object with keys {list(_KEYS)}; "
                              f"got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(_KEYS))
        if unknown:
            raise ConfigError(f"{where}: entry {name!r} has unknown keys {unknown}; valid keys: {list(_KEYS)}")
        token = entry.get("token")
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{where}: the token of {name!r} must be a string of at least {MIN_TOKEN_LENGTH} "
                              "characters")
        rights = {key: _patterns(entry.get(key), key, name, where) for key in ("infer", "train") if key in entry}
        providers.append(Provider(name, token, **rights))
    tokens = [p.token for p in providers]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"{where}: two providers share one token; every provider needs its own")
    return AccessList(providers)


def _patterns(value: Any, key: str, name: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {name}.{key} must be a list of patterns ('*', 'local:SERVICE', a model name or "
                          f"a path spec); got {value!r}")
    for v in value:
        if v != "*" and not v.startswith("local:") and ">" in v:
            try:
                PathSpec.parse(v)
            except PathSpecError as exc:
                raise ConfigError(f"{where}: {name}.{key} pattern {v!r} is not a valid path spec: {exc}") from None
    return tuple(value)


def load_access(file: str | FsPath) -> AccessList:
    """The providers of a JSON token file."""
    try:
        data = json.loads(FsPath(file).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"token file {str(file)!r} cannot be read as JSON: {exc}") from exc
    return access_from(data, f"token file {str(file)!r}")
