"""Errors a user can act on: the stage stops with their one-line message instead of a traceback."""


class SelfchatError(Exception):
    pass
