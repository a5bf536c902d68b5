"""Exit-code contract (DESIGN §3): 2 bad input (not retried), 3 out of memory/resources, 4 this worker's environment
(retried, ideally elsewhere), else retryable."""
from __future__ import annotations

import socket


class BadInput(Exception):
    """The stage cannot succeed with these inputs; retrying will not help. Exit code 2."""


class ResourceExhausted(Exception):
    """Out of memory or another resource. Exit code 3."""


class WorkerEnvironment(Exception):
    """This host cannot run the stage (an input path not visible here, a package not installed here), though the
    inputs may be fine: another worker can. Exit code 4; the message names the host."""

    def __init__(self, message: str):
        super().__init__(f"{message} (on host {socket.gethostname()})")


EXIT_BAD_INPUT = 2
EXIT_RESOURCE = 3
EXIT_WORKER_ENV = 4


def missing_package(e: BaseException) -> str | None:
    """The top-level package a ModuleNotFoundError names, when it is a third-party one (not ratioloop's own code)."""
    if not isinstance(e, ModuleNotFoundError) or not e.name:
        return None
    top = e.name.split(".")[0]
    return None if top in ("ratioloop_py", "__main__") else top
