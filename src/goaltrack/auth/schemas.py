from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, EmailStr, Field

from goaltrack.auth.security import BCRYPT_MAX_BYTES
from goaltrack.schemas import DeviceToken, Locale, RequestModel, TimeZoneName, is_blank

PASSWORD_MIN_CHARS = 8


def _check_password(value: str) -> str:
    if is_blank(value):  # the same set of whitespace the OpenAPI document states
        raise ValueError("password must not be blank")
    if len(value) < PASSWORD_MIN_CHARS:
        raise ValueError(f"password must have at least {PASSWORD_MIN_CHARS} characters")
    # bcrypt reads only the first 72 bytes: refuse rather than silently truncate.
    if len(value.encode()) > BCRYPT_MAX_BYTES:
        raise ValueError(f"password must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8")
    return value


NewPassword = Annotated[str, Field(max_length=1024), AfterValidator(_check_password)]
# A password being checked, not chosen: any length is accepted and simply does not match.
GivenPassword = Annotated[str, Field(min_length=1, max_length=1024)]
# 254: the longest address email-validator (behind EmailStr) accepts, RFC 5321's path limit.
EMAIL_MAX_LENGTH = 254
Email = Annotated[EmailStr, Field(max_length=EMAIL_MAX_LENGTH), AfterValidator(str.lower)]
OpaqueToken = Annotated[str, Field(min_length=1, max_length=512)]


class RegisterRequest(RequestModel):
    email: Email
    password: NewPassword
    timezone: TimeZoneName | None = None
    locale: Locale | None = None


class LoginRequest(RequestModel):
    email: Email
    password: GivenPassword


class RefreshRequest(RequestModel):
    refresh_token: OpaqueToken


class LogoutRequest(RequestModel):
    refresh_token: OpaqueToken
    device_token: DeviceToken | None = None


class ForgotPasswordRequest(RequestModel):
    email: Email


class ResetPasswordRequest(RequestModel):
    token: OpaqueToken
    new_password: NewPassword


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class Accepted(BaseModel):
    detail: str


class VerifyByToken(RequestModel):
    """The link's token, from the verification mail (no bearer token needed)."""

    token: OpaqueToken


class VerifyByCode(RequestModel):
    """The 6-digit code from the verification mail, sent with the caller's bearer token."""

    code: Annotated[str, Field(pattern=r"^[0-9]{6}$")]
