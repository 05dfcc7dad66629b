"""The errors a user can cause: one base class, so that the command line reports them all in
one line (the message names the input at fault and the fix) instead of a traceback."""

import errno


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


# Operating-system errors a user's folders cause besides those of CAUSED_BY_USER: a read-only
# file system (EROFS), a quota exceeded (EDQUOT).
USER_ERRNOS = frozenset({errno.EROFS, errno.EDQUOT})


def caused_by_user(err: BaseException) -> bool:
    """Whether the command line reports ``err`` in one line: a :data:`CAUSED_BY_USER` error, an
    operating-system error of :data:`USER_ERRNOS`, or Ctrl-C (a KeyboardInterrupt)."""
    return isinstance(err, CAUSED_BY_USER + (KeyboardInterrupt,)) or (
        isinstance(err, OSError) and err.errno in USER_ERRNOS)


def message(err: BaseException) -> str:
    """The error's text as one line reports it: an operating-system error without its
    ``[Errno N]`` prefix, and the file named once (``checkpoint not found: P``,
    ``Permission denied: P``)."""
    if isinstance(err, KeyboardInterrupt):
        return str(err) or "interrupted (Ctrl-C)"  # training says where it stopped
    if isinstance(err, OSError) and err.strerror:
        name = err.filename
        text = err.strerror if name is None or str(name) in err.strerror else \
            f"{err.strerror}: {name}"
        if err.errno == errno.EROFS:
            text += "; give a folder on a writable file system (e.g. --run-dir or --out)"
        return text
    return str(err)
