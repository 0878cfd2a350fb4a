"""Measurement method shared by every benchmark.

Warm-up, then rounds that alternate the contenders (A B A B ...), so that a
noisy neighbour slows all of them alike; medians per contender, ratios
computed round by round (pair by pair), min-max kept so noise is visible.

Also here: the result types (:class:`Comparison` for timings,
:class:`CountTable` for counts), the table printer, the peer venvs
(:func:`peer_python`) and the worker that runs a peer's code in its own
interpreter (:class:`PeerWorker`), the loopback HTTP server process
(:func:`loopback_server`) and the run :class:`Context` (smoke or full, the
shared IdP and peer worker).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / "bench" / ".venvs"
BENCH_DIR = ROOT / "bench"

#: The published release the project is compared with, and its venv.
OLD_NAME = "kstlib 3.8.2"
OLD_VENV = "kstlib-3.8.2"
OLD_REQUIREMENT = "kstlib==3.8.2"

#: Bench-only packages (never dependencies of kstlib): import name -> pip requirement.
OPTIONAL_PACKAGES = {
    "authlib": "authlib",
    "jwt": "pyjwt",
    "joserfc": "joserfc",
    "httpx_auth": "httpx-auth",
    "matplotlib": "matplotlib",
}

#: Installed project dependencies that a bench-only package must not change: httpx-auth
#: pins ``httpx==<minor>.*``, so without these pins pip could swap the project's httpx.
PINNED_DEPENDENCIES = ("httpx", "httpcore")


# --------------------------------------------------------------------------- results


@dataclass
class Series:
    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.samples), max(self.samples)


@dataclass
class Goal:
    """A target, printed next to the figure it is about; ``source`` names the request that
    set it, shown in words by the report (:data:`GOAL_PURPOSES`)."""

    text: str
    met: bool | None  # None: not measurable in this run (the reason is in ``text``/notes)
    source: str = ""  # e.g. "issue 4"

    @property
    def verdict(self) -> str:
        return {True: "MET", False: "NOT MET", None: "n/a"}[self.met]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "met": self.met, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Goal:
        return cls(data["text"], data.get("met"), data.get("source", ""))


# --- goals in words (the performance page shows these, never an issue number) -------------

#: Why each goal exists, in words, by the ``Goal.source`` label of the request that set it.
#: docs/performance.md shows the words; a source missing here shows nothing rather than a
#: bare issue number (add its words here).
GOAL_PURPOSES: dict[str, str] = {
    "issue 2": "importing the library costs less than the HTTP client it builds on",
    "issue 4": (
        "a session adds nothing measurable to a request, and many callers needing a new "
        "token at once cause exactly one refresh"
    ),
    "issue 5": (
        "verifying a token costs close to the bare signature check, and less than the "
        "common JWT libraries"
    ),
    "issue 7": "printing a cached token is fast enough to run at every shell prompt",
    "issue 8": "measured and reported, no target",
    "seams issue": "a reused TokenChecker costs little more than the signature check itself",
    "issue 13": (
        "a service's token comes from one request per expiry, however many tasks, threads "
        "or processes ask at once"
    ),
    "issue 14": "a sender-constrained (DPoP) request costs little more than a Bearer one",
    "issue 15": (
        "a fleet of workers shares one token and one copy of the IdP's metadata, and Redis "
        "storage adds nothing measurable to a request"
    ),
    "issue 16": (
        "credential helpers (kubectl, git) answer with a cached token about as fast as a "
        "Python start-up allows, and a realistic import stays close to httpx's"
    ),
}


def goal_purpose(source: str) -> str:
    """The words for a goal's ``source``; "" for an unlisted issue label."""
    if source in GOAL_PURPOSES:
        return GOAL_PURPOSES[source]
    if re.search(r"\bissue\b|#\d", source, re.IGNORECASE):
        return ""
    return source


@dataclass
class Comparison:
    """Contenders measured in alternation; ``ratios[name]`` are per-round ratios to the baseline.

    ``skipped`` maps a contender that could not run to the reason; ``extra``
    adds per-contender columns (e.g. a request count); ``higher_is_better``
    marks throughput units.
    """

    title: str
    unit: str
    baseline: str
    series: dict[str, Series]
    goal: str | None = None
    goal_met: bool | None = None
    goals: list[Goal] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    higher_is_better: bool = False
    section: str = ""

    def ratio(self, name: str) -> tuple[float, float, float]:
        return self.pair_ratio(name, self.baseline)

    def pair_ratio(self, name: str, other: str) -> tuple[float, float, float]:
        """Median, min and max of ``name / other`` computed round by round."""
        base = self.series[other].samples
        mine = self.series[name].samples
        per_round = [m / b for m, b in zip(mine, base, strict=True) if b > 0]
        if not per_round:
            return float("nan"), float("nan"), float("nan")
        return statistics.median(per_round), min(per_round), max(per_round)

    def all_goals(self) -> list[Goal]:
        legacy = [Goal(self.goal, self.goal_met)] if self.goal else []
        return legacy + self.goals

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "timing",
            "section": self.section,
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "goal": self.goal,
            "goal_met": self.goal_met,
            "goals": [g.to_dict() for g in self.all_goals()],
            "notes": self.notes,
            "skipped": self.skipped,
            "contenders": {
                name: {
                    "median": s.median,
                    "min": s.spread[0],
                    "max": s.spread[1],
                    "rounds": len(s.samples),
                    "samples": s.samples,
                    "ratio_to_baseline": dict(
                        zip(("median", "min", "max"), self.ratio(name), strict=True)
                    ),
                    **({"extra": self.extra[name]} if name in self.extra else {}),
                }
                for name, s in self.series.items()
            },
        }


def comparison_from_dict(data: dict[str, Any]) -> Comparison:
    """The :class:`Comparison` that :meth:`Comparison.to_dict` wrote (bench/results.json)."""
    contenders = data["contenders"]
    return Comparison(
        title=data["title"],
        unit=data["unit"],
        baseline=data["baseline"],
        series={name: Series(name, list(c["samples"])) for name, c in contenders.items()},
        goals=[Goal.from_dict(g) for g in data.get("goals", [])],  # the legacy goal included
        skipped=dict(data.get("skipped", {})),
        notes=list(data.get("notes", [])),
        extra={name: c["extra"] for name, c in contenders.items() if "extra" in c},
        higher_is_better=bool(data.get("higher_is_better", False)),
        section=data.get("section", ""),
    )


@dataclass
class CountTable:
    """Counts (not times): ``rows[row][column]`` is a cell; ``None`` = not run."""

    title: str
    columns: list[str]
    rows: dict[str, dict[str, Any]]
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    section: str = ""
    row_label: str = "scenario"

    def all_goals(self) -> list[Goal]:
        return self.goals

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "counts",
            "section": self.section,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "goals": [g.to_dict() for g in self.goals],
            "notes": self.notes,
            "skipped": self.skipped,
            "row_label": self.row_label,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CountTable:
        return cls(
            title=data["title"],
            columns=list(data["columns"]),
            rows={row: dict(cells) for row, cells in data["rows"].items()},
            goals=[Goal.from_dict(g) for g in data.get("goals", [])],
            notes=list(data.get("notes", [])),
            skipped=dict(data.get("skipped", {})),
            section=data.get("section", ""),
            row_label=data.get("row_label", "scenario"),
        )


Result = Comparison | CountTable


def result_from_dict(data: dict[str, Any]) -> Result:
    """A result of bench/results.json, rebuilt (``python -m bench --report-only``)."""
    if data.get("kind") == "counts":
        return CountTable.from_dict(data)
    return comparison_from_dict(data)


# --------------------------------------------------------------------------- method


def alternate(
    contenders: dict[str, Callable[[], float]], *, rounds: int, warmup: int = 1
) -> dict[str, Series]:
    """Run each contender ``warmup`` times, then ``rounds`` times in alternation."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    series = {name: Series(name) for name in contenders}
    names = list(contenders)
    for i in range(rounds):
        order = names if i % 2 == 0 else list(reversed(names))
        for name in order:
            series[name].samples.append(contenders[name]())
    return series


def time_subprocess(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: bytes | None = None,
) -> float:
    """Wall time (seconds) of one subprocess run (``stdin`` written to it); raises if it fails."""
    started = time.perf_counter()
    subprocess.run(
        argv,
        check=True,
        env=env,
        cwd=cwd,
        input=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.perf_counter() - started


def per_op(fn: Callable[[], Any], n: int, *, scale: float = 1e6) -> Callable[[], float]:
    """A contender: ``n`` calls of ``fn`` per sample, giving ``scale`` x seconds per call."""

    def sample() -> float:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) / n * scale

    return sample


def calibrate(fn: Callable[[], Any], seconds: float, *, minimum: int = 1) -> int:
    """How many calls of ``fn`` take about ``seconds``."""
    n = 1
    while True:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - started
        if elapsed >= 0.02 or n >= 1 << 20:
            return max(minimum, round(n * seconds / max(elapsed, 1e-9)))
        n *= 2


# --------------------------------------------------------------------------- peers


def peer_python(name: str, requirement: str) -> Path | None:
    """The python of a peer's own venv under bench/.venvs (created on first use).

    Returns None when it cannot be installed (the table then says so).
    """
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == requirement:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return None
    stamp.write_text(requirement)
    return python


def have(module: str) -> bool:
    """True when ``module`` can be imported in this interpreter."""
    importlib.invalidate_caches()
    return importlib.util.find_spec(module) is not None


def ensure_packages(modules: Sequence[str]) -> dict[str, str]:
    """pip-install the missing bench-only packages into this venv; return failures' reasons.

    One pip run per package, each with the project's installed httpx (and httpcore) pinned:
    a package that needs another httpx fails to install (and is reported) instead of
    replacing the one the project is measured with.
    """
    missing = [m for m in modules if not have(m)]
    if not missing:
        return {}
    pins = [f"{dist}=={v}" for dist in PINNED_DEPENDENCIES if (v := _dist_version(dist))]
    print(
        f"installing bench-only packages into {sys.prefix}: "
        + " ".join(OPTIONAL_PACKAGES[m] for m in missing)
    )
    failures = {}
    for module in missing:
        requirement = OPTIONAL_PACKAGES[module]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
                *pins,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
            check=False,
        )
        if not have(module):
            failures[module] = (
                f"pip install {requirement} (with {', '.join(pins) or 'no pins'}) failed: "
                + (proc.stderr.strip().splitlines()[-1:] or ["?"])[0][:200]
            )
    return failures


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- httpx-auth

#: Printed under every table httpx-auth takes part in.
HTTPX_AUTH_SEED_NOTE = (
    "httpx-auth: only its own browser login fills its token cache (httpx_auth.OAuth2."
    "token_cache) and it has no public call to put an existing token in, so the bench seeds "
    "the cache with the private TokenMemoryCache._add_access_token(auth.state, access token, "
    "expires_in, refresh token); auth.state (the cache key) is public. Its browser login is "
    "replaced by an error (InteractiveLogin): the bench never opens a browser"
)


class InteractiveLogin(RuntimeError):
    """httpx-auth asked for its interactive browser login (the bench never opens a browser)."""


def httpx_auth_pkce(authorization_url: str, token_url: str, **kwargs: Any) -> Any:
    """An httpx-auth ``OAuth2AuthorizationCodePKCE`` whose browser login raises InteractiveLogin.

    ``kwargs`` go to httpx-auth (``client_id``, ``client_secret``, ``scope``, ``timeout``...);
    they also make its cache key (``auth.state``), so equal arguments share a cached token.
    """
    from httpx_auth import OAuth2AuthorizationCodePKCE

    auth = OAuth2AuthorizationCodePKCE(authorization_url, token_url, **kwargs)

    def no_browser() -> tuple[str, str]:
        raise InteractiveLogin("httpx-auth wanted its browser login: no token in its cache")

    auth.request_new_token = no_browser  # type: ignore[method-assign]
    return auth


def seed_httpx_auth(
    cache: Any, auth: Any, access_token: str, expires_in: int, refresh_token: str | None
) -> None:
    """Put a token in httpx-auth's ``cache`` under ``auth``'s key (private API, see the note)."""
    cache._add_access_token(auth.state, access_token, expires_in, refresh_token)


@contextlib.contextmanager
def httpx_auth_cache(cache: Any) -> Iterator[Any]:
    """Make ``cache`` httpx-auth's process-wide token cache (``OAuth2.token_cache``) meanwhile."""
    from httpx_auth import OAuth2

    previous = OAuth2.token_cache
    OAuth2.token_cache = cache
    try:
        yield cache
    finally:
        OAuth2.token_cache = previous


class PeerError(RuntimeError):
    """A peer worker reported an error (or died)."""


class PeerWorker:
    """A long-lived interpreter running ``script`` that answers JSON-line commands.

    The worker prints one JSON object per line (``{"ok": true, ...}`` or
    ``{"ok": false, "error": "..."}``) for each command it reads; its stderr
    goes to ``log``. Peer contenders are alternated with local ones by
    sending ``time`` commands from :func:`alternate`.
    """

    def __init__(
        self,
        python: Path,
        script: Path,
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [str(python), str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=env,
            cwd=cwd,
            text=True,
            bufsize=1,
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise PeerError(f"peer worker exited ({self.proc.poll()}); log: {self._tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise PeerError(str(reply.get("error", "unknown error")))
        return dict(reply)

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return "?"

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise PeerError(f"peer worker is gone; log: {self._tail()}") from exc
        return self._read()

    def timer(self, op: str, n: int, *, scale: float = 1e6) -> Callable[[], float]:
        """A contender: the peer runs ``op`` ``n`` times; ``scale`` x seconds per call."""
        return lambda: self.call("time", op=op, n=n)["seconds"] / n * scale

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit")
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def loopback_server() -> Iterator[str]:
    """A minimal asyncio HTTP/1.1 server in its own process; yields its base URL.

    It answers 200 to any request carrying an Authorization header (401
    otherwise) and keeps connections alive. Being a separate process, it does
    not share the GIL with the client being measured.
    """
    proc = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "_loopback.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip())
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# --------------------------------------------------------------------------- run context


@dataclass
class Context:
    """One run of ``python -m bench``: its mode, scratch directory and shared helpers."""

    smoke: bool
    rounds: int
    tmp: Path
    peers: bool
    missing: dict[str, str] = field(default_factory=dict)  # optional module -> reason
    _idp: Any = None
    _peer: PeerWorker | None = None
    _peer_reason: str | None = None
    _age: Any = None
    _redis: Any = None  # issue 15

    @classmethod
    @contextlib.contextmanager
    def open(cls, *, smoke: bool, rounds: int) -> Iterator[Context]:
        tmp = Path(tempfile.mkdtemp(prefix="kstlib-bench-"))
        ctx = cls(smoke=smoke, rounds=rounds, tmp=tmp, peers=not smoke)
        try:
            if smoke:
                ctx.missing = {
                    m: "not installed (smoke mode installs nothing; the full run pip-installs it)"
                    for m in OPTIONAL_PACKAGES
                    if not have(m)
                }
            else:
                ctx.missing = ensure_packages(list(OPTIONAL_PACKAGES))
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def available(self, module: str) -> str | None:
        """None when the optional ``module`` can be used, else why not."""
        return self.missing.get(module)

    # -- the published release -------------------------------------------------------------

    def old_python(self) -> Path | None:
        if not self.peers:
            return None
        return peer_python(OLD_VENV, OLD_REQUIREMENT)

    def old_reason(self) -> str:
        if not self.peers:
            return "skipped in smoke"
        return self._peer_reason or f"could not install {OLD_REQUIREMENT} into bench/.venvs"

    def peer(self) -> PeerWorker | None:
        """The kstlib 3.8.2 worker (bench/peer_old.py in its venv), started on first use."""
        if self._peer is not None or self._peer_reason is not None or not self.peers:
            return self._peer
        python = self.old_python()
        if python is None:
            self._peer_reason = f"could not install {OLD_REQUIREMENT} into bench/.venvs"
            return None
        home = self.tmp / "peer-home"
        home.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "HOME": str(home),  # no user kstlib.conf.yml, tokens stay in the scratch dir
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PYTHONWARNINGS": "ignore",
        }
        env.pop("KSTLIB_CONFIG", None)
        try:
            self._peer = PeerWorker(
                python,
                BENCH_DIR / "peer_old.py",
                log=self.tmp / "peer-old.log",
                env=env,
                cwd=home,
            )
        except (PeerError, OSError) as exc:
            self._peer_reason = f"its worker did not start: {exc}"
        return self._peer

    # -- the local IdP ---------------------------------------------------------------------

    def idp(self) -> Any:
        """The real test IdP (tests/idp_support.py), started on first use."""
        if self._idp is None:
            from tests.idp_support import start_idp

            self._idp = start_idp(self.tmp / "idp")
        return self._idp

    # -- sops ------------------------------------------------------------------------------

    def age(self) -> Any:
        """A real age identity (pyrage) for the sops storages; sets SOPS_AGE_KEY_FILE."""
        if self._age is None:
            from tests.sops_support import ensure_venv_bin_on_path, make_age_identity

            ensure_venv_bin_on_path()
            self._age = make_age_identity(self.tmp / "age")
            os.environ["SOPS_AGE_KEY_FILE"] = str(self._age.key_file)
        return self._age

    # -- issue 15: a real redis-server ---------------------------------------------------------

    def redis(self) -> Any:
        """A real redis-server on a free loopback port (tests/redis_support.py), started once."""
        if self._redis is None:
            from tests.redis_support import RedisServer

            self._redis = RedisServer(self.tmp / "redis").start()
        return self._redis

    def close(self) -> None:
        if self._redis is not None:  # issue 15
            self._redis.stop()
            self._redis = None
        if self._peer is not None:
            self._peer.close()
            self._peer = None
        if self._idp is not None:
            self._idp.close()
            self._idp = None


# --------------------------------------------------------------------------- table


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(results: Sequence[Result]) -> str:
    """The plain-text table printed at the end of a run."""
    lines: list[str] = []
    section = None
    for comp in results:
        if comp.section and comp.section != section:
            section = comp.section
            lines.append(f"\n=== {section}")
        if isinstance(comp, CountTable):
            lines.extend(_count_lines(comp))
            continue
        better = "higher is better" if comp.higher_is_better else "lower is better"
        lines.append(f"\n## {comp.title}  (unit: {comp.unit}, {better}; ratio: x {comp.baseline})")
        for goal in comp.all_goals():
            lines.append(f"   goal: {goal.text} -> {goal.verdict}")
        extra_cols = sorted({k for e in comp.extra.values() for k in e})
        w = max([46] + [len(name) for name in (*comp.series, *comp.skipped)])
        header = f"{'contender':<{w}} {'median':>10} {'min':>10} {'max':>10} "
        header += f"{'ratio (min-max)':>22}"
        header += "".join(f"  {c}" for c in extra_cols)
        lines.append(header)
        for name, s in comp.series.items():
            r, rmin, rmax = comp.ratio(name)
            lo, hi = s.spread
            row = (
                f"{name:<{w}} {_fmt(s.median):>10} {_fmt(lo):>10} {_fmt(hi):>10} "
                f"{f'{r:.2f}x ({rmin:.2f}-{rmax:.2f})':>22}"
            )
            row += "".join(f"  {comp.extra.get(name, {}).get(c, '')}" for c in extra_cols)
            lines.append(row)
        for name, reason in comp.skipped.items():
            lines.append(f"{name:<{w}} {'not measured: ' + reason}")
        for note in comp.notes:
            lines.append(f"   note: {note}")
    return "\n".join(lines)


def _count_lines(table: CountTable) -> list[str]:
    lines = [f"\n## {table.title}"]
    for goal in table.goals:
        lines.append(f"   goal: {goal.text} -> {goal.verdict}")
    width = max([len(table.row_label)] + [len(r) for r in table.rows]) + 2

    def cell(row: dict[str, Any], column: str) -> str:
        return "-" if row.get(column) is None else str(row[column])

    widths = {
        c: max([len(c)] + [len(cell(r, c)) for r in table.rows.values()]) + 3 for c in table.columns
    }
    lines.append(
        f"{table.row_label:<{width}}" + "".join(f"{c:>{widths[c]}}" for c in table.columns)
    )
    for row, cells in table.rows.items():
        text = "".join(f"{cell(cells, c):>{widths[c]}}" for c in table.columns)
        lines.append(f"{row:<{width}}{text}")
    for name, reason in table.skipped.items():
        lines.append(f"{name}: not measured: {reason}")
    for note in table.notes:
        lines.append(f"   note: {note}")
    return lines
