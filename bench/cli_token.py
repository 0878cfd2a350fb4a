"""``kstlib auth token`` with a valid cached token (file storage), as a shell prompt runs it;
beside it the two credential helpers a user runs hundreds of times a day: ``--format
kubectl`` (kubectl's exec plugin) and ``git-credential get`` (git's helper), both answered
from the cached token. Baselines: ``python -c pass`` (goal 3x, #16) and ``import httpx``.
Beside them, without a goal, ``kstlib auth providers``: a general command (the whole Typer
application, the configuration, a provider built; no network), what every other command
pays to start.

This project: a throw-away ``kstlib.conf.yml`` named by ``KSTLIB_CONFIG``,
the token saved by ``FileTokenStorage``. kstlib 3.8.2: its configuration is
found in the working directory (it has no ``KSTLIB_CONFIG``), its token file
is written by its own ``FileTokenStorage`` (``<dir>/<name>.token.json``).
The issuer is a closed port: a command that touched the network would fail.
Baseline: ``python -c "import httpx"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.common import OLD_NAME, Comparison, Context, Goal, alternate, time_subprocess

GOAL_RATIO = 2.0
#: kstlib auth token, --format kubectl and git-credential get <= 3x python -c pass (#16 item 4).
PASS_GOAL_RATIO = 3.0
HTTPX = 'python -c "import httpx"'
PASS = 'python -c "pass"'
MINE = "kstlib auth token"
KUBE = "kstlib auth token --format kubectl"
GIT = "kstlib auth git-credential corp get"
GIT_REQUEST = b"protocol=https\nhost=git.example.test\npath=group/repo.git\n\n"
OLD = f"{OLD_NAME}: kstlib auth token"
#: A general command (the full Typer application, no network): what every other command pays
#: to start, measured beside the token fast path.
PROVIDERS = "kstlib auth providers"
PROVIDER = "corp"
ISSUER = "http://127.0.0.1:9/realms/bench"  # port 9 (discard): nothing answers there
RAW = {
    "access_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl",
    "token_type": "Bearer",
    "expires_in": 3600,
    "refresh_token": "refresh-token-value",
    "scope": "openid profile",
}


def _id_token() -> str:
    """An ID token shape valid for an hour (the helpers decode a stored one, never verify)."""
    import base64
    import json
    import time

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench", "aud": "bench-cli", "iat": now, "exp": now + 3600}
    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2lnbmF0dXJl"


def _config(directory: Path, tokens: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kstlib.conf.yml"
    path.write_text(
        f"""auth:
  default_provider: {PROVIDER}
  token_storage: file
  storage:
    file:
      directory: {tokens}
  providers:
    {PROVIDER}:
      type: oidc
      issuer: {ISSUER}
      client_id: bench-cli
""",
        encoding="utf-8",
    )
    return path


def _kstlib_command(python: Path) -> list[str]:
    script = python.parent / "kstlib"
    if script.exists():
        return [str(script)]
    return [str(python), "-c", "from kstlib.cli import main; main()"]


def _check_output(argv: Sequence[str], env: dict[str, str], cwd: Path, who: str) -> None:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or proc.stdout.strip() != RAW["access_token"]:
        raise RuntimeError(
            f"{who} did not print the cached token (exit {proc.returncode}): "
            f"{proc.stdout[-300:]!r} {proc.stderr[-500:]!r}"
        )


def _home_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("KSTLIB_CONFIG", None)
    return env


def run(ctx: Context) -> list[Comparison]:
    from kstlib.auth.models import Token
    from kstlib.auth.token import FileTokenStorage

    base = ctx.tmp / "cli"
    mine_dir = base / "new"
    tokens = mine_dir / "tokens"
    config = _config(mine_dir, tokens)
    FileTokenStorage(tokens).save(PROVIDER, Token.from_response({**RAW, "id_token": _id_token()}))
    mine_env = _home_env(base / "home-new")
    mine_env["KSTLIB_CONFIG"] = str(config)
    kstlib = _kstlib_command(Path(sys.executable))
    mine_argv = [*kstlib, "auth", "token"]
    kube_argv = [*kstlib, "auth", "token", "--format", "kubectl"]
    git_argv = [*kstlib, "auth", "git-credential", PROVIDER, "get"]
    _check_output(mine_argv, mine_env, mine_dir, "kstlib auth token")
    _check_helpers(kube_argv, git_argv, mine_env, mine_dir)
    providers_argv = [*kstlib, "auth", "providers"]
    _check_providers(providers_argv, mine_env, mine_dir)

    def timed(
        argv: Sequence[str], env: dict[str, str], cwd: Path, stdin: bytes | None = None
    ) -> Callable[[], float]:
        return lambda: time_subprocess(argv, env=env, cwd=cwd, stdin=stdin) * 1e3

    httpx_env = _home_env(base / "home-httpx")
    contenders = {
        HTTPX: timed([sys.executable, "-c", "import httpx"], httpx_env, base),
        PASS: timed([sys.executable, "-c", "pass"], httpx_env, base),
        MINE: timed(mine_argv, mine_env, mine_dir),
        KUBE: timed(kube_argv, mine_env, mine_dir),
        GIT: timed(git_argv, mine_env, mine_dir, GIT_REQUEST),
        PROVIDERS: timed(providers_argv, mine_env, mine_dir),
    }
    skipped: dict[str, str] = {}
    notes: list[str] = []
    peer = ctx.peer()
    old = ctx.old_python()
    if peer is not None and old is not None:
        old_dir = base / "old"
        old_tokens = old_dir / "tokens"
        _config(old_dir, old_tokens)
        peer.call("cli_token_file", dir=str(old_tokens), name=PROVIDER, raw=RAW)
        old_env = _home_env(base / "home-old")
        old_argv = [*_kstlib_command(old), "auth", "token"]
        try:
            _check_output(old_argv, old_env, old_dir, OLD)
            contenders[OLD] = timed(old_argv, old_env, old_dir)
            notes.append(
                f"{OLD_NAME} reads ./kstlib.conf.yml (run in the config's directory) and "
                "<dir>/corp.token.json written by its own FileTokenStorage"
            )
        except RuntimeError as exc:
            skipped[OLD] = f"its command could not be made to print the token: {exc}"
    else:
        skipped[OLD] = ctx.old_reason()
    series = alternate(contenders, rounds=ctx.rounds, warmup=1)
    comp = Comparison(
        title="kstlib auth token, valid cached token in file storage (wall time)",
        unit="ms",
        baseline=HTTPX,
        series=series,
        skipped=skipped,
        notes=notes,
        section="2. CLI",
    )
    ratio = comp.ratio(MINE)[0]
    comp.goals.append(
        Goal(
            f'kstlib auth token <= {GOAL_RATIO}x python -c "import httpx" (measured {ratio:.2f}x)',
            ratio <= GOAL_RATIO,
            "issue 7",
        )
    )
    for name in (MINE, KUBE, GIT):
        to_pass = comp.pair_ratio(name, PASS)[0]
        comp.goals.append(
            Goal(
                f'{name} <= {PASS_GOAL_RATIO}x python -c "pass" (measured {to_pass:.2f}x)',
                to_pass <= PASS_GOAL_RATIO,
                "issue 16",
            )
        )
    return [comp]


def _check_helpers(
    kube_argv: Sequence[str], git_argv: Sequence[str], env: dict[str, str], cwd: Path
) -> None:
    """The two helpers answer from the cached token (else their timing would be of an error)."""
    import json

    kube = subprocess.run(kube_argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    git = subprocess.run(
        git_argv,
        env=env,
        cwd=cwd,
        input=GIT_REQUEST.decode(),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        kind = json.loads(kube.stdout).get("kind") if kube.returncode == 0 else None
    except ValueError:
        kind = None
    if kind != "ExecCredential" or f"password={RAW['access_token']}" not in git.stdout:
        raise RuntimeError(
            f"the helpers did not answer from the cached token: {kube.stderr[-300:]!r} "
            f"{git.stderr[-300:]!r}"
        )


def _check_providers(argv: Sequence[str], env: dict[str, str], cwd: Path) -> None:
    """``kstlib auth providers`` lists the provider (else its timing would be of an error)."""
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or PROVIDER not in proc.stdout:
        raise RuntimeError(
            f"{PROVIDERS} did not list {PROVIDER!r} (exit {proc.returncode}): "
            f"{proc.stdout[-300:]!r} {proc.stderr[-300:]!r}"
        )
