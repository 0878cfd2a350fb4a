"""The ``kstlib`` command line (console script ``kstlib = kstlib.cli:main``).

``main()`` first offers the arguments to the fast path of ``kstlib auth
token`` (:mod:`kstlib.cli._fast`, standard library only); anything it does
not handle goes to the Typer application (:mod:`kstlib.cli.app`). Importing
this package imports neither Typer nor Rich (nor :mod:`typing`).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # not imported at run time: the fast path loads neither typing nor collections
    from collections.abc import Sequence
    from typing import NoReturn

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run ``kstlib`` with ``argv`` (default: ``sys.argv[1:]``) and exit with its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    from kstlib.cli._fast import run_fast_path

    code = run_fast_path(args, sys.stdout.write)
    if code is None:
        from kstlib.cli.app import run

        code = run(args)
    sys.stdout.flush()
    raise SystemExit(code)
