"""convscope: turn a YAML spec into a browsable, verified report of what is inside a CNN."""

__version__ = "0.1.0"
