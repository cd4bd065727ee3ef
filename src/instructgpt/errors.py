"""Errors a user can cause. The CLI prints them as one line and exits non-zero; anything else is a bug."""


class UserError(Exception):
    """A problem with the user's input (file, line, option or value). The message is shown as one line."""


def data_error(path, line: int | None, message: str) -> UserError:
    """A malformed-data error that names the file and (1-based) line."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return UserError(f"{where}: {message}")
