"""The one exception type a user can cause: the CLI prints its message and exits 2."""


class UserError(Exception):
    """A mistake the user can fix (bad path, unknown preset, foreign checkpoint, ...).

    The message names the thing and the fix; the CLI shows it without a traceback.
    """
