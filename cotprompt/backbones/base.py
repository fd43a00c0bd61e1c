"""The interface the tuners need from a vision-language backbone: :class:`Backbone`, defined with
the other component protocols in :mod:`cotprompt.protocols`."""

from cotprompt.protocols import Backbone

__all__ = ["Backbone"]
