from __future__ import annotations

from datetime import UTC, datetime

from goaltrack.errors import AppError, ServiceUnavailable, Unauthorized


class EmailTaken(AppError):
    status_code = 409
    code = "email_taken"
    detail = "An account with this e-mail already exists."


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    detail = "Wrong e-mail or password."


class AccountDeleted(AppError):
    status_code = 403
    code = "account_deleted"
    detail = "This account is scheduled for deletion; it can be restored until restore_until."

    def __init__(self, restore_until: datetime) -> None:
        # In UTC, rendered `...Z` like every timestamp of the API (errors.ProblemResponse).
        super().__init__(extra={"restore_until": restore_until.astimezone(UTC)})


class InvalidRefreshToken(Unauthorized):
    code = "invalid_token"
    detail = "The refresh token is invalid, expired or revoked."


class ResetTokenInvalid(AppError):
    status_code = 400
    code = "reset_token_invalid"
    detail = "The reset link is invalid, used or expired."


class InvalidPassword(AppError):
    status_code = 400
    code = "invalid_password"
    detail = "The current password is wrong."


class VerificationInvalid(AppError):
    status_code = 400
    code = "verification_invalid"
    detail = "The verification link or code is invalid, used or expired."


class NothingToVerify(AppError):
    status_code = 409
    code = "nothing_to_verify"
    detail = "The e-mail address is verified and no change is waiting."


class RestoreExpired(AppError):
    status_code = 410
    code = "restore_expired"
    detail = "The grace period is over: this account has been or is being deleted for good."


class InvalidIdToken(Unauthorized):
    code = "invalid_token"
    detail = "The ID token is invalid, expired or not meant for this app."


class ProviderNotConfigured(AppError):
    status_code = 503
    code = "provider_not_configured"
    detail = "Signing in with this provider is not configured on this server."


class ProviderUnavailable(ServiceUnavailable):
    code = "provider_unavailable"
    detail = "The sign-in provider's keys could not be fetched; try again later."


class IdentityNotConfirmed(AppError):
    status_code = 400
    code = "invalid_id_token"
    detail = "The ID token is invalid, expired or not one of this account's sign-ins."
