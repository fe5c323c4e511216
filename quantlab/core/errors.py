"""The one exception type for mistakes a user can make.

Pages catch `QuantlabError` and show its message as a single line; anything else is a bug and
should surface as one. Keeping user errors in one class is what lets the UI tell the two apart.
"""


class QuantlabError(ValueError):
    """A problem with user input (file, tensor, settings), explained in one line."""
