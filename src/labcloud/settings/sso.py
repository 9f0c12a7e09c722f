"""Single sign-on: the OpenID Connect providers users log in with, and what their logins may do."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

ROLES = ("viewer", "member", "manager", "owner")


class SsoProvider(BaseModel):
    """One OpenID Connect provider (Keycloak, an institution's login, Google Workspace, Entra ID)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="Short name in URLs and on the command line: lower-case letters, digits, -."
    )
    label: str = Field("", description="Text of the login button; default 'Log in with NAME'.")
    discovery_url: str = Field(
        description="The issuer, or its /.well-known/openid-configuration URL (read when first needed)."
    )
    client_id: str
    client_secret: SecretStr = Field(SecretStr(""), description="Empty for a public client.")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="E-mail domains whose first login creates an account ('*': any); other logins only "
        "reach accounts that exist already, through a verified e-mail.",
    )
    trust_email: bool = Field(
        False,
        description="Treat every e-mail this provider sends as verified (for one that verifies them all but "
        "sends no email_verified claim, e.g. Entra ID).",
    )
    roles_claim: str = Field("", description="Claim holding the user's groups or entitlements, e.g. groups.")
    admin_values: list[str] = Field(
        default_factory=list, description="Values of roles_claim that make the user an administrator."
    )
    project_roles: dict[str, str] = Field(
        default_factory=dict,
        description='Value of roles_claim → "project-slug:role" (role: viewer, member, manager, owner; '
        "default member): a login adds the user to that project.",
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="Longest wait for an answer of the provider.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", value):
            raise ValueError("1 to 40 lower-case letters, digits and hyphens")
        return value

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in value if d.strip()]

    @field_validator("project_roles")
    @classmethod
    def _project_roles(cls, value: dict[str, str]) -> dict[str, str]:
        for target in value.values():
            role = target.partition(":")[2] or "member"
            if role not in ROLES:
                raise ValueError(f"{target!r}: the role must be one of {', '.join(ROLES)}")
        return value

    @property
    def button_label(self) -> str:
        return self.label or f"Log in with {self.name}"

    @property
    def metadata_url(self) -> str:
        url = self.discovery_url.rstrip("/")
        suffix = "/.well-known/openid-configuration"
        return url if url.endswith(suffix) else url + suffix


class SsoSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings` for single sign-on."""

    sso_providers: list[SsoProvider] = Field(
        default_factory=list,
        description="OpenID Connect providers: [[sso_providers]] tables in the file, or JSON in "
        "LABCLOUD_SSO_PROVIDERS.",
    )
    sso_required_domains: list[str] = Field(
        default_factory=list,
        description="E-mail domains whose accounts must log in through a provider (their passwords are "
        "refused).",
    )
    password_login: bool = Field(
        True, description="false: nobody logs in with a password (API tokens keep working)."
    )

    @field_validator("sso_providers")
    @classmethod
    def _unique_names(cls, value: list[SsoProvider]) -> list[SsoProvider]:
        names = [p.name for p in value]
        if len(set(names)) != len(names):
            raise ValueError(f"each provider needs a name of its own: {', '.join(names)}")
        return value

    def sso_provider(self, name: str) -> SsoProvider | None:
        return next((p for p in self.sso_providers if p.name == name), None)

    def password_allowed_for(self, email: str) -> bool:
        if not self.password_login:
            return False
        domain = email.strip().lower().rpartition("@")[2]
        return domain not in {d.strip().lower().lstrip("@") for d in self.sso_required_domains}
