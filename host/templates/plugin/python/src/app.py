"""The module componentize-py builds: exports the channel."""

from omnigate_sdk import export

from channel import __TYPE__

Plugin = export(__TYPE__)
