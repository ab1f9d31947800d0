"""Errors that report bad user input (files, checkpoints, data) in one line naming the problem."""


class UserError(Exception):
    """Bad input from the user: the message names the file, field or constraint at fault."""
