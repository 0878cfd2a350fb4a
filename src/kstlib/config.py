"""Finding, reading and merging ``kstlib.conf.yml``.

The configuration is the deep merge of these files, lowest priority first:

1. the defaults packaged with kstlib (``kstlib/kstlib.conf.yml``);
2. the site config: ``kstlib/kstlib.conf.yml`` under each ``$XDG_CONFIG_DIRS`` entry
   (``/etc/xdg/kstlib/kstlib.conf.yml`` by default), the first entry winning;
3. ``$XDG_CONFIG_HOME/kstlib.conf.yml`` (``~/.config/kstlib.conf.yml``);
4. ``$XDG_CONFIG_HOME/kstlib/kstlib.conf.yml`` (``~/.config/kstlib/kstlib.conf.yml``);
5. ``~/kstlib.conf.yml``;
6. ``./kstlib.conf.yml``, the working directory's file: see "Trust" below.

An explicit file (the ``path`` argument, else ``$KSTLIB_CONFIG``) replaces steps 2-6; the
packaged defaults still lie below it. Files named ``*.sops.yml``/``*.sops.yaml`` are decrypted
with the ``sops`` binary. Mappings merge key by key; any other value (list, scalar, null)
replaces the lower one.

Trust. A configuration chooses programs to run (``sops_binary``), files to read (secret
references, storage directories), and where secrets and tokens are sent (endpoints, TLS
settings). Those choices belong to the user, never to a directory the user happens to ``cd``
into (a cloned repository). So a layer is *trusted* only when the user put it there:

* the packaged defaults and an explicit file are trusted;
* a searched file (steps 2-5) is trusted when it is owned by the user (or root) and is not
  writable by everybody;
* the working directory's file is trusted only when its directory is listed in
  ``trust.directories`` of a trusted layer (``"*"`` trusts every directory), in the spirit of
  git's ``safe.directory``.

An untrusted layer may only *add*: new providers (made of the keys in
:data:`UNTRUSTED_PROVIDER_KEYS`, without secret references) and ``auth.default_provider``.
When it sets anything else, the whole file is ignored with a :class:`ConfigWarning` that names
the key and the fix, and :attr:`LoadedConfig.ignored` records it.

Every load returns fresh objects: nothing read from a file is kept at module level, so a caller
mutating its result never affects another load. ``yaml`` and ``platformdirs`` are imported
only when a file is actually read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kstlib._errors import ConfigurationError
from kstlib._redaction import get_logger

__all__ = [
    "CONFIG_ENV_VAR",
    "CONFIG_FILENAME",
    "UNTRUSTED_PROVIDER_KEYS",
    "ConfigSource",
    "ConfigWarning",
    "IgnoredLayer",
    "KeyPath",
    "LoadedConfig",
    "config_search_path",
    "load_config",
    "packaged_defaults_path",
    "user_config_home",
]

CONFIG_FILENAME = "kstlib.conf.yml"
#: Environment variable naming an explicit configuration file.
CONFIG_ENV_VAR = "KSTLIB_CONFIG"
_SOPS_SUFFIXES = (".sops.yml", ".sops.yaml")

#: A path of keys from the top of the configuration, e.g. ``("auth", "providers", "corp")``.
KeyPath = tuple[Hashable, ...]

#: Keys a provider defined by an untrusted layer may set: what describes a client of an
#: identity provider, and nothing that runs a program, reads a file, changes TLS trust,
#: chooses where tokens rest, or hands another provider's token over (``subject_provider``).
#: Secret references (``sops://``, ``env://``, ``file://``) are refused in any value.
UNTRUSTED_PROVIDER_KEYS: frozenset[str] = frozenset(
    {
        "type", "client_id", "client_secret", "issuer", "scopes", "redirect_uri", "pkce",
        "discovery_ttl", "headers", "extra", "token_endpoint_auth_method",
        "post_logout_redirect_uri", "leeway", "timeout", "max_retries", "refresh_skew",
        "id_token_signing_alg_values", "jwks_uri", "end_session_endpoint",
        "authorize_url", "authorization_endpoint", "token_url", "token_endpoint",
        "revoke_url", "revocation_endpoint", "userinfo_url", "userinfo_endpoint",
        "introspection_url", "introspection_endpoint",
        "device_authorization_url", "device_authorization_endpoint",
    }
)  # fmt: skip
#: The section (of a trusted layer) naming the directories whose ``./kstlib.conf.yml`` is trusted.
_TRUST_KEYS = ("trust", "directories")


class ConfigWarning(UserWarning):
    """A configuration problem that does not stop kstlib: an unknown key, an unsafe choice,
    an untrusted file that was ignored."""


@dataclass(frozen=True)
class ConfigSource:
    """Where configuration values came from: a file, or a mapping passed in by code.

    ``trusted`` is False for a layer that may only add providers (see the module doc).
    """

    label: str
    path: Path | None = None
    trusted: bool = True

    @classmethod
    def file(cls, path: Path, *, trusted: bool = True) -> ConfigSource:
        """The source for a configuration file."""
        return cls(str(path), path, trusted)

    @property
    def base_dir(self) -> Path | None:
        """Directory that relative paths in this source are relative to (None: the cwd)."""
        return self.path.parent if self.path is not None else None

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class IgnoredLayer:
    """A file that was found but not merged, and why (one line, with the fix)."""

    path: Path
    reason: str


@dataclass(frozen=True, eq=False, repr=False)
class LoadedConfig(Mapping[str, Any]):
    """The merged configuration, a read-only mapping, with the provenance of every key.

    ``data`` belongs to this object alone (it is never shared with another load), and
    ``source_of`` tells which source last set a key, so errors can name the file.
    ``ignored`` lists the untrusted files that were left out.
    Passing a ``LoadedConfig`` as the ``config=`` argument of the ``kstlib.auth`` helpers
    keeps that provenance and avoids reading the files again.
    """

    data: dict[str, Any]
    sources: tuple[ConfigSource, ...] = ()
    origins: Mapping[KeyPath, ConfigSource] = field(default_factory=dict)
    ignored: tuple[IgnoredLayer, ...] = ()

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[Any, Any], *, label: str = "config mapping"
    ) -> LoadedConfig:
        """Wrap a configuration given by code; every key is attributed to ``label``."""
        source = ConfigSource(label)
        return cls(_plain_copy(mapping), (source,), {(): source})

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        labels = ", ".join(source.label for source in self.sources)
        return f"LoadedConfig(sources=[{labels}])"

    def get_path(self, *keys: Hashable) -> Any:
        """The raw value at ``keys`` (not copied), or None when any step is missing."""
        node: Any = self.data
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node

    def source_of(self, *keys: Hashable) -> ConfigSource | None:
        """The source that set ``keys``, or else the nearest enclosing key that has one."""
        for end in range(len(keys), -1, -1):
            source = self.origins.get(keys[:end])
            if source is not None:
                return source
        return None


def user_config_home() -> Path:
    """``$XDG_CONFIG_HOME`` when it is an absolute path, else ``~/.config``."""
    configured = os.environ.get("XDG_CONFIG_HOME", "")
    if configured and Path(configured).is_absolute():
        return Path(configured)
    return Path.home() / ".config"


def packaged_defaults_path() -> Path:
    """The defaults file shipped inside the package."""
    return Path(__file__).with_name(CONFIG_FILENAME)


def _site_config_paths() -> list[Path]:
    """Site config files, lowest priority first (the first ``$XDG_CONFIG_DIRS`` entry wins)."""
    import platformdirs

    dirs = platformdirs.site_config_dir("kstlib", multipath=True).split(os.pathsep)
    return [Path(d) / CONFIG_FILENAME for d in reversed(dirs) if d]


def config_search_path() -> list[Path]:
    """Every file the search considers, lowest priority first (missing ones included)."""
    return [
        packaged_defaults_path(),
        *_site_config_paths(),
        user_config_home() / CONFIG_FILENAME,
        user_config_home() / "kstlib" / CONFIG_FILENAME,
        Path.home() / CONFIG_FILENAME,
        Path.cwd() / CONFIG_FILENAME,
    ]


def _explicit_file(path: str | os.PathLike[str] | None) -> Path | None:
    """The explicit file from the argument or ``$KSTLIB_CONFIG``, None when neither is set."""
    chosen = os.fspath(path) if path is not None else os.environ.get(CONFIG_ENV_VAR, "")
    if not chosen:
        if path is not None:
            raise ConfigurationError("load_config(path=...) was given an empty path.")
        return None
    explicit = Path(chosen).expanduser().absolute()
    if not explicit.is_file():
        origin = "path argument" if path is not None else f"${CONFIG_ENV_VAR}"
        raise ConfigurationError(
            f"{explicit}: configuration file not found (named by {origin}).", file=str(explicit)
        )
    return explicit


#: ``-v``: the files loaded; ``-vv``: also the packaged defaults and the places searched
#: that hold no file.
_log = get_logger("kstlib.config")


def _how_loaded(file: Path, distrust: str | None) -> str:
    if file == packaged_defaults_path():
        return " (packaged defaults)"
    return "" if distrust is None else f" (untrusted: {distrust}; it may only add providers)"


def _candidate_files(explicit: Path | None) -> list[tuple[Path, bool]]:
    """Existing files to merge, lowest priority first, each file once, with a flag telling
    whether the file is the working directory's (searched, not chosen by the user)."""
    candidates = [packaged_defaults_path()]
    candidates += [explicit] if explicit is not None else config_search_path()[1:]
    cwd_file = None if explicit is not None else candidates[-1]
    seen: set[Path] = set()
    files: list[tuple[Path, bool]] = []
    for candidate in candidates:
        if not candidate.is_file():
            _log.debug("No configuration file at %s", candidate)
            continue
        key = candidate.resolve()
        if key not in seen:
            seen.add(key)
            files.append((candidate, candidate is cwd_file))
    return files


def load_config(*, path: str | os.PathLike[str] | None = None) -> LoadedConfig:
    """Read and merge the configuration files.

    Args:
        path: An explicit file that replaces the search (``$KSTLIB_CONFIG`` when None).

    Raises:
        ConfigurationError: A file is unreadable, not valid YAML, not a mapping at the top,
            cannot be decrypted, or the explicit file does not exist.
    """
    import warnings

    explicit = _explicit_file(path)
    merged: dict[str, Any] = {}
    origins: dict[KeyPath, ConfigSource] = {}
    sources: list[ConfigSource] = []
    ignored: list[IgnoredLayer] = []
    for file, in_cwd in _candidate_files(explicit):
        searched = file != explicit and file != packaged_defaults_path()
        distrust = _distrust(file, in_cwd, merged, origins) if searched else None
        data = _read_file(file, merged)
        if distrust is not None:
            refused = _refused_key(data, merged)
            if refused is not None:
                reason = (
                    f"{file}: ignored: {distrust}, and an untrusted file may not set "
                    f"{refused} (it may only add providers). {_TRUST_HINT}"
                )
                ignored.append(IgnoredLayer(file, reason))
                warnings.warn(reason, ConfigWarning, stacklevel=2)
                continue
        source = ConfigSource.file(file, trusted=distrust is None)
        _merge_into(merged, data, (), source, origins)
        sources.append(source)
        level = logging.DEBUG if file == packaged_defaults_path() else logging.INFO
        _log.log(level, "Loaded configuration file %s%s", file, _how_loaded(file, distrust))
    return LoadedConfig(merged, tuple(sources), origins, tuple(ignored))


_TRUST_HINT = (
    "To use it, add its directory to trust.directories in ~/.config/kstlib/kstlib.conf.yml, "
    f"or name it with ${CONFIG_ENV_VAR}."
)


def _distrust(
    file: Path, in_cwd: bool, merged: Mapping[str, Any], origins: Mapping[KeyPath, ConfigSource]
) -> str | None:
    """Why a searched file is not trusted, or None when it is."""
    try:
        status = file.stat()
    except OSError:
        return None  # unreadable: _read_file reports it
    if status.st_uid not in (0, os.getuid()):
        return f"it is owned by another user (uid {status.st_uid})"
    if status.st_mode & 0o002:
        return "it is writable by every user"
    if in_cwd and not _directory_is_trusted(file.parent, merged, origins):
        return "its directory is not trusted"
    return None


def _directory_is_trusted(
    directory: Path, merged: Mapping[str, Any], origins: Mapping[KeyPath, ConfigSource]
) -> bool:
    """Whether ``trust.directories`` (set by trusted layers only) lists ``directory``."""
    node: Any = merged
    for key in _TRUST_KEYS:
        node = node.get(key) if isinstance(node, Mapping) else None
    if node is None:
        return False
    source = origins.get(_TRUST_KEYS)
    where = f"{source}: " if source is not None else ""
    if not isinstance(node, list) or not all(isinstance(item, str) and item for item in node):
        raise ConfigurationError(
            f"{where}trust.directories must be a list of directory paths.",
            file=str(source.path) if source is not None and source.path else None,
            key="trust.directories",
        )
    here = directory.resolve()
    for entry in node:
        if entry == "*":
            return True
        listed = Path(entry).expanduser()
        if listed.is_absolute() and listed.resolve() == here:
            return True
    return False


def _refused_key(data: Mapping[Any, Any], trusted: Mapping[str, Any]) -> str | None:
    """The first key an untrusted layer may not set (dotted), or None when it only adds."""
    from kstlib.secrets import is_secret_reference

    for key, auth in data.items():
        if key != "auth":
            return str(key)
        if not isinstance(auth, Mapping):
            return "auth"
        for auth_key, value in auth.items():
            if auth_key == "default_provider" and (value is None or isinstance(value, str)):
                continue
            if auth_key != "providers" or not isinstance(value, Mapping):
                return f"auth.{auth_key}"
            existing = _providers_of(trusted)
            for name, settings in value.items():
                where = f"auth.providers.{name}"
                if not isinstance(settings, Mapping) or name in existing:
                    return where
                for setting, item in settings.items():
                    if setting not in UNTRUSTED_PROVIDER_KEYS:
                        return f"{where}.{setting}"
                    if any(is_secret_reference(text) for text in _strings(item)):
                        return f"{where}.{setting} (a secret reference)"
    return None


def _providers_of(config: Mapping[str, Any]) -> Mapping[Any, Any]:
    auth = config.get("auth")
    providers = auth.get("providers") if isinstance(auth, Mapping) else None
    return providers if isinstance(providers, Mapping) else {}


def _strings(value: Any) -> Iterator[str]:
    """Every string inside ``value`` (mapping keys and values, list items)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _merge_into(
    target: dict[Any, Any],
    overlay: Mapping[Any, Any],
    prefix: KeyPath,
    source: ConfigSource,
    origins: dict[KeyPath, ConfigSource],
) -> None:
    """Deep-merge ``overlay`` into ``target``, recording ``source`` for every key it sets."""
    for key, value in overlay.items():
        path = (*prefix, key)
        origins[path] = source
        if isinstance(value, Mapping):
            current = target.get(key)
            if not isinstance(current, dict):
                current = target[key] = {}
            _merge_into(current, value, path, source, origins)
        else:
            target[key] = value


def _plain_copy(value: Any) -> Any:
    """A deep copy made of dicts and lists, whatever mapping/sequence types came in."""
    if isinstance(value, Mapping):
        return {key: _plain_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(item) for item in value]
    return value


def _read_file(path: Path, below: Mapping[str, Any]) -> dict[str, Any]:
    """Parse one configuration file (decrypting it first when it is a SOPS file).

    A SOPS file is decrypted with the ``sops_binary`` of the (trusted) layers ``below`` it.
    """
    sops_file = path.name.endswith(_SOPS_SUFFIXES)
    text = _decrypt(path, below) if sops_file else _read_text(path)
    data = _parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        line = _top_level_line(text)
        raise ConfigurationError(
            f"{path}:{line}: the top level must be a mapping of sections "
            f"(like 'auth:'), not a {type(data).__name__}.",
            file=str(path),
        )
    return data


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{path}: not UTF-8 text (byte {exc.start}).", file=str(path)
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"{path}: cannot read ({reason}).", file=str(path)) from None


def _decrypt(path: Path, below: Mapping[str, Any]) -> str:
    from kstlib._sops import configured_sops_binary
    from kstlib.secrets import sops_decrypt

    return sops_decrypt(path, what="configuration file", sops_binary=configured_sops_binary(below))


def _safe_loader() -> Any:
    """libyaml's safe loader when PyYAML was built with it (same safe constructors, about
    ten times faster: it matters for `kstlib auth token` in shell prompts), else PyYAML's."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` with errors naming the file and line, never quoting the content.

    Aliases are accepted while their expansion stays within :data:`MAX_EXPANDED_NODES`
    (see :func:`_refuse_alias_bombs`), so the work stays bounded for any input.
    """
    import yaml

    try:
        loader = _safe_loader()(text)
        try:
            node = loader.get_single_node()
            if node is not None and "*" in text:
                _refuse_alias_bombs(node, path)
            return loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigurationError(f"{where}: invalid YAML: {problem}.", file=str(path)) from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # ValueError: a scalar YAML resolves to a date or number but cannot build (2024-13-45).
        raise ConfigurationError(
            f"{path}: invalid YAML ({type(exc).__name__}).", file=str(path)
        ) from None


#: Most nodes a configuration may hold once its aliases are expanded.
MAX_EXPANDED_NODES = 100_000


def _refuse_alias_bombs(root: Any, path: Path) -> None:
    """Raise when expanding the aliases of the node graph would exceed the node budget.

    Aliases share nodes; the configuration is then walked and copied as a tree, so nodes
    shared inside each other ("billion laughs", with aliases or ``<<:`` merges) would make
    that work exponential. The expanded size is computed on the graph, each node once
    (memoised by identity): linear in the file, whatever it holds.
    """
    import yaml

    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = MAX_EXPANDED_NODES + 1  # a cycle counts as too large
        if isinstance(node, yaml.ScalarNode):
            total = 1
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1 + sum(size(key) + size(value) for key, value in node.value)
        total = min(total, MAX_EXPANDED_NODES + 1)
        sizes[id(node)] = total
        return total

    if size(root) > MAX_EXPANDED_NODES:
        raise ConfigurationError(
            f"{path}: its YAML aliases expand to more than {MAX_EXPANDED_NODES:,} values; "
            "refused (write the values out, or use fewer nested aliases).",
            file=str(path),
        )


def _top_level_line(text: str) -> int:
    """1-based line where the top-level YAML node starts."""
    import yaml

    node = yaml.compose(text, Loader=_safe_loader())
    return node.start_mark.line + 1 if node is not None else 1
