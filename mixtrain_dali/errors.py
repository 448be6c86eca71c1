"""The one exception type for a user's mistake (the CLI prints it in one line and exits 2)."""


class UserError(ValueError):
    """Bad input from a user: a path, a flag, a config value. Its message names the bad value
    and what would be valid. Internal errors are other exception types and keep their traceback."""
