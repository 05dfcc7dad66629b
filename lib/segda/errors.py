"""The errors a user can cause: one base class, so that the command line reports them all in
one line (the message names the input at fault and the fix) instead of a traceback."""


class UserError(Exception):
    """An error caused by an input (a config value, a file, a folder in use), not by a bug:
    every such error class of the package subclasses it besides its usual base (``ValueError``,
    ``RuntimeError``, ``OSError``), so ``except ValueError`` keeps working."""


# Built-in errors that a user's files cause (a missing file, a read-only folder, a file where a
# folder should be); their message names the path. The command line reports them like a
# UserError.
CAUSED_BY_USER: tuple[type[Exception], ...] = (
    UserError, FileNotFoundError, PermissionError, FileExistsError, NotADirectoryError,
    IsADirectoryError)


def message(err: BaseException) -> str:
    """The error's text as one line reports it: an operating-system error without its
    ``[Errno N]`` prefix, and the file named once (``checkpoint not found: P``,
    ``Permission denied: P``)."""
    if isinstance(err, OSError) and err.strerror:
        name = err.filename
        return err.strerror if name is None or str(name) in err.strerror else \
            f"{err.strerror}: {name}"
    return str(err)
