"""`backend-server`: serve the REST API with uvicorn."""

from __future__ import annotations

import uvicorn
from backend_common.logging import configure_logging

from backend_server.settings import ServerSettings


def main() -> None:
    settings = ServerSettings()
    configure_logging(settings.logging, service="server")
    uvicorn.run(
        "backend_server.app:create_app",
        factory=True,
        host=settings.process.bind_host,
        port=settings.process.bind_port,
        workers=settings.process.workers,
        log_config=None,  # keep the JSON logging configured above
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
