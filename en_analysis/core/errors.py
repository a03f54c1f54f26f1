"""The one exception family for mistakes a user can make: the CLI prints the message and exits 2."""


class UserError(ValueError):
    """A mistake the user can fix (bad path, unknown preset, bad setting, foreign checkpoint...).

    The message names the thing and the fix; the CLI shows it without a traceback. It is a
    ``ValueError``, so code that calls the library and catches bad values catches these too.
    """
