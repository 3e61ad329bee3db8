"""The backend database: the local replica of orchestrator assets and the backend's own tables."""

from backend_common.db import local, replica
from backend_common.db.base import Base
from backend_common.db.session import make_engine, make_session_factory, session_scope

__all__ = ["Base", "local", "make_engine", "make_session_factory", "replica", "session_scope"]
