"""Snowflake credentials for the sync extractor, from `SNOWFLAKE_*` variables or a secrets file.

Sources, highest precedence first:

1. keyword arguments (`SnowflakeSettings(account=...)`, used by tests and the CLI);
2. environment variables `SNOWFLAKE_ACCOUNT`, `SNOWFLAKE_USER`, `SNOWFLAKE_PASSWORD`, ...;
3. the secrets file named by `SNOWFLAKE_SECRETS_FILE`: a YAML or JSON mapping with the
   same keys, written either bare (`account: xy12345`) or as the variable names
   (`SNOWFLAKE_ACCOUNT: xy12345`), optionally nested under a top-level `snowflake:` key so
   one file can hold several services' secrets. For example:

       snowflake:
         account: xy12345.eu-west-1
         user: AGENTDATA_SYNC
         private_key_file: /run/secrets/snowflake_key.p8
         warehouse: SYNC_WH
         role: AGENTDATA_READER

`SNOWFLAKE_HOST`, `SNOWFLAKE_PORT` and `SNOWFLAKE_PROTOCOL` exist so the extractor can talk
to the `fakesnow` emulator (`http` on localhost); in production they are left unset and
the connector derives the host from the account.

The password and the key passphrase are `SecretStr`: they print as `**********` in
reprs, logs and validation errors. Only `connect_kwargs()` reveals them, to hand them to
`snowflake.connector.connect`; never log its result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agentdata.errors import InvalidArgument

ENV_PREFIX = "SNOWFLAKE_"


class SnowflakeSettings(BaseSettings):
    """Connection settings for Snowflake (or the emulator); see the module docstring."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    account: str | None = Field(None, description="Account identifier, e.g. xy12345.eu-west-1.")
    user: str | None = Field(None, description="Login name.")
    password: SecretStr | None = Field(None, description="Password (or use a private key).")
    private_key_file: Path | None = Field(
        None, description="PEM/P8 private key for key-pair authentication."
    )
    private_key_file_pwd: SecretStr | None = Field(
        None, description="Passphrase of private_key_file, if it is encrypted."
    )
    authenticator: str | None = Field(
        None, description="Connector authenticator (default: password or key pair)."
    )
    warehouse: str | None = Field(None, description="Warehouse that runs the extraction queries.")
    database: str | None = Field(None, description="Default database for unqualified sources.")
    # `schema` would shadow a pydantic BaseModel attribute, hence the alias.
    schema_name: str | None = Field(
        None,
        validation_alias=AliasChoices("schema", "schema_name", f"{ENV_PREFIX}SCHEMA"),
        description="Default schema for unqualified sources.",
    )
    role: str | None = Field(None, description="Role to assume.")
    host: str | None = Field(None, description="Override the host (the emulator).")
    port: int | None = Field(None, description="Override the port (the emulator).")
    protocol: Literal["https", "http"] | None = Field(
        None, description="Override the protocol; http only for the emulator."
    )
    login_timeout: int | None = Field(
        None, description="Seconds to keep retrying the login (connector default: 120)."
    )
    network_timeout: int | None = Field(
        None, description="Seconds to keep retrying one request (connector default: none)."
    )
    secrets_file: Path | None = Field(
        None, description="YAML or JSON file holding any of these settings."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The secrets file comes last: an explicit argument or variable overrides it.
        return (init_settings, env_settings, _SecretsFileSource(settings_cls))

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `snowflake.connector.connect`, secrets revealed.

        Raises `InvalidArgument` naming what is missing when the credentials are
        incomplete, so a misconfigured worker fails with a clear message rather than the
        connector's login error.
        """
        missing = [name for name in ("account", "user") if not getattr(self, name)]
        if missing:
            names = ", ".join(ENV_PREFIX + name.upper() for name in missing)
            raise InvalidArgument(f"Snowflake credentials incomplete: set {names}")
        if not (self.password or self.private_key_file or self.authenticator):
            raise InvalidArgument(
                "Snowflake credentials incomplete: set SNOWFLAKE_PASSWORD or "
                "SNOWFLAKE_PRIVATE_KEY_FILE (or SNOWFLAKE_AUTHENTICATOR)"
            )
        kwargs: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "password": self.password.get_secret_value() if self.password else None,
            "private_key_file": str(self.private_key_file) if self.private_key_file else None,
            "private_key_file_pwd": (
                self.private_key_file_pwd.get_secret_value() if self.private_key_file_pwd else None
            ),
            "authenticator": self.authenticator,
            "warehouse": self.warehouse,
            "database": self.database,
            "schema": self.schema_name,
            "role": self.role,
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "login_timeout": self.login_timeout,
            "network_timeout": self.network_timeout,
        }
        # Unset options are left out so the connector applies its own defaults.
        return {key: value for key, value in kwargs.items() if value is not None}


class _SecretsFileSource(PydanticBaseSettingsSource):
    """Settings from the YAML/JSON file named by `secrets_file` (argument or variable)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads the whole file at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("secrets_file")
        if not path:
            return {}
        values: dict[str, Any] = {}
        for key, value in _read_secrets_file(Path(path)).items():
            name = str(key).lower().removeprefix(ENV_PREFIX.lower())
            name = "schema_name" if name == "schema" else name
            # Only fill gaps: a value given as an argument or variable wins.
            if name in self.settings_cls.model_fields and not self._given(name):
                values[name] = value
        return values

    def _given(self, name: str) -> bool:
        """Whether an earlier source set field `name`, under its name or any alias."""
        field = self.settings_cls.model_fields[name]
        spellings = {name}
        if isinstance(field.validation_alias, AliasChoices):
            spellings |= {str(choice) for choice in field.validation_alias.choices}
        spellings = {spelling.lower() for spelling in spellings}
        return any(key.lower() in spellings for key in self.current_state)


def _read_secrets_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidArgument(f"cannot read SNOWFLAKE_SECRETS_FILE {path}: {exc.strerror}") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception:  # json.JSONDecodeError or yaml.YAMLError
        # `from None`: the parser's message may quote the offending line, i.e. a secret.
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise InvalidArgument(f"SNOWFLAKE_SECRETS_FILE {path} is not valid {kind}") from None
    if isinstance(data, dict) and isinstance(data.get("snowflake"), dict):
        data = data["snowflake"]
    if not isinstance(data, dict):
        raise InvalidArgument(f"SNOWFLAKE_SECRETS_FILE {path} must hold a mapping of settings")
    return data
