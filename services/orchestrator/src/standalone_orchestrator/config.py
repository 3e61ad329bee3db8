"""The orchestrator's configuration file (YAML).

```yaml
listen: 0.0.0.0:9000
database_url: postgresql+psycopg2://orchestrator@localhost/orchestrator
metrics_listen: 0.0.0.0:8484          # optional: Prometheus /metrics
channels:
  mychannel: [MyOrg1MSP, MyOrg2MSP]
tls:                                  # optional
  cert: /certs/server.crt
  key: /certs/server.key
  mtls: false                         # require a client certificate
  client_ca: /certs/ca.crt            # CA bundle trusted for client certificates
  client_ca_dir: /certs/orgs          # <dir>/<mspid>/*.pem, also trusted for client certificates
  verify_client_msp_id: false         # the mspid header must match the client certificate
```

`ORCHESTRATOR_DATABASE_URL` in the environment overrides `database_url`, so that a chart can keep
the password in a secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from standalone_orchestrator import DEFAULT_VERSION


class TLSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cert: Path
    key: Path
    mtls: bool = False
    client_ca: Path | None = None
    client_ca_dir: Path | None = None
    verify_client_msp_id: bool = False

    @model_validator(mode="after")
    def _mtls_needs_a_ca(self) -> TLSConfig:
        if self.mtls and self.client_ca is None and self.client_ca_dir is None:
            raise ValueError("tls.mtls needs tls.client_ca or tls.client_ca_dir")
        if self.verify_client_msp_id and not self.mtls:
            raise ValueError("tls.verify_client_msp_id needs tls.mtls")
        if self.verify_client_msp_id and self.client_ca_dir is None:
            raise ValueError("tls.verify_client_msp_id needs tls.client_ca_dir (<dir>/<mspid>/*.pem)")
        return self


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "0.0.0.0:9000"
    database_url: str
    channels: dict[str, list[str]]
    metrics_listen: str | None = None
    tls: TLSConfig | None = None
    # How long a write is retried after a serialization failure or a deadlock.
    tx_retry_budget_seconds: float = Field(default=0.5, ge=0)
    # Events read per query when a subscriber replays the log.
    replay_batch_size: int = Field(default=500, ge=1)
    # Threads doing the database work of calls (event streams wait without holding one).
    max_workers: int = Field(default=64, ge=2)
    database_pool_size: int = Field(default=10, ge=1)
    version: str = DEFAULT_VERSION

    @field_validator("channels")
    @classmethod
    def _channels_not_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if not value:
            raise ValueError("at least one channel is required")
        return value

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            _, sep, port = value.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"expected host:port, got {value!r}")
        return value

    def organization_channels(self) -> dict[str, frozenset[str]]:
        """mspid -> channels it may use."""
        result: dict[str, set[str]] = {}
        for channel, organizations in self.channels.items():
            for organization in organizations:
                result.setdefault(organization, set()).add(channel)
        return {organization: frozenset(channels) for organization, channels in result.items()}


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def load_config(path: str | Path) -> Config:
    raw: Any = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    override = os.environ.get("ORCHESTRATOR_DATABASE_URL")
    if override:
        raw["database_url"] = override
    base = Path(path).parent
    tls = raw.get("tls")
    if isinstance(tls, dict):
        # Relative certificate paths are relative to the configuration file.
        for name in ("cert", "key", "client_ca", "client_ca_dir"):
            if tls.get(name):
                tls[name] = str(base / tls[name])
    return Config.model_validate(raw)
