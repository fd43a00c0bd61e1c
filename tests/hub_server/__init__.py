"""A Hub-API-subset HTTP server for tests (see :mod:`hub_server.server`)."""

from hub_server.server import Commit, HubHTTPError, HubServer, Repo, StoredFile

__all__ = ["Commit", "HubHTTPError", "HubServer", "Repo", "StoredFile"]
