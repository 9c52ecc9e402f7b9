"""What the command exits with, and why (`EXIT_CODES`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from flou_client import (
        FlouError,
    )


EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_AUTH: Final = 4
EXIT_INTERRUPTED: Final = 130

EXIT_CODES: Final = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    the server refused or failed the request; stderr says the status code,
       the reason, the message and the metadata (e.g. NOT_FOUND
       ERROR_REASON_INSTANCE_NOT_FOUND), or the server could not start
  {EXIT_USAGE}    usage error: an unknown option, bad JSON in --payload, --params or
       KEY=JSON (the message names the option and says why), an unreadable file
  {EXIT_UNREACHABLE}    cannot reach the server (UNAVAILABLE) or the deadline (--timeout) passed
  {EXIT_AUTH}    unauthenticated or permission denied: check --token / FLOU_TOKEN
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""
"""The exit codes, as the epilog of `--help` shows them."""


class UsageError(Exception):
    """A command-line value the parser could not check by itself (exit 2)."""


def exit_code(error: FlouError) -> int:
    """The exit code of a failed call (see `EXIT_CODES`)."""
    from flou_client import (
        DeadlineExceededError,
        PermissionDeniedError,
        UnauthenticatedError,
        UnavailableError,
    )

    if isinstance(error, UnavailableError | DeadlineExceededError):
        return EXIT_UNREACHABLE
    if isinstance(error, UnauthenticatedError | PermissionDeniedError):
        return EXIT_AUTH
    return EXIT_ERROR
