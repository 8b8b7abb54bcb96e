"""The one error type for user mistakes.

Anything a user can fix (a missing dataset, bad weights, a bad onboarding folder, a wrong option)
raises a subclass of `UserError`; `nnunet-dino` prints its message on one line-block and exits
with code 2, without a traceback. Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message says what was wrong and how to fix it."""


class OptionError(UserError, ValueError):
    """A command-line option or argument that cannot be used as given."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, folder, dataset, plans file or model that is not there."""


class ExistingOutputError(UserError, FileExistsError):
    """An output that exists already and would be replaced without being asked to."""
