"""The one exception type for mistakes a user can fix, and its one-line wording.

Entry points print it as `error: <what> (<flag, file or field>, <value>): <what to do>` (minitrain.cli.run)."""

_UNSET = object()


class UserError(ValueError):
    """A mistake the user can fix. `UserError(what, where, value, fix)` reads
    "<what> (<where>, <value>): <fix>"; `UserError(message)` is taken as written."""

    def __init__(self, what: str, where: str | None = None, value=_UNSET, fix: str | None = None):
        culprit = [x for x in (where, None if value is _UNSET else repr(value)) if x is not None]
        message = what + (f" ({', '.join(culprit)})" if culprit else "") + (f": {fix}" if fix else "")
        super().__init__(message)
