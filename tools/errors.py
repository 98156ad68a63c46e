"""The error a tool raises for bad input: ``exch`` prints it and exits 2, having changed nothing."""


class ToolError(Exception):
    pass
