# Errors a user can read. Each carries a path (where in the input) so messages read
# "nodes[2].lan[0]: '198.19.300.0/24' is not an IP prefix".


class LanmeshError(Exception):
    """Base for errors reported to the operator (CLI exits non-zero with the message)."""


class ConfigError(LanmeshError):
    """A node config is missing, unreadable or invalid."""


class KeyError_(LanmeshError):
    """A key is malformed or its file is unsafe."""


class DocumentError(LanmeshError):
    """A network document failed to parse or validate; `problems` lists every error."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class BackendError(LanmeshError):
    """The data plane could not be brought to the desired state."""
