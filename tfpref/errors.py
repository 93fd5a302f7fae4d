"""Errors meant for people: one line, naming the file, line, field or flag that is wrong."""


class UserError(Exception):
    """Bad input from the user. The CLI prints `error: <message>` and exits with code 2."""


def location(path, line=None, field=None):
    """Format `path[:line][ field 'x']` for error messages."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field is not None:
        text += f": field '{field}'"
    return text
