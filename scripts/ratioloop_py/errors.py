"""Exit-code contract (DESIGN §3): 2 bad input (not retried), 3 out of memory/resources, else retryable."""


class BadInput(Exception):
    """The stage cannot succeed with these inputs; retrying will not help. Exit code 2."""


class ResourceExhausted(Exception):
    """Out of memory or another resource. Exit code 3."""


EXIT_BAD_INPUT = 2
EXIT_RESOURCE = 3
