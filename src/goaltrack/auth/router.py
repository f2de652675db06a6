from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status

from goaltrack.auth import identities, service, verification
from goaltrack.auth.dependencies import IdTokensDep, PasswordsDep
from goaltrack.auth.errors import (
    AccountDeleted,
    EmailTaken,
    InvalidCredentials,
    InvalidIdToken,
    InvalidRefreshToken,
    ProviderNotConfigured,
    ProviderUnavailable,
    ResetTokenInvalid,
    RestoreExpired,
)
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.auth.oauth import Provider
from goaltrack.auth.schemas import (
    Accepted,
    AppleSignInRequest,
    ForgotPasswordRequest,
    GoogleSignInRequest,
    LoginRequest,
    LogoutRequest,
    OAuthSignInRequest,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    TokenPair,
)
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.deps import SessionmakerDep, SettingsDep
from goaltrack.errors import RateLimited, error_responses
from goaltrack.ratelimit import (
    RateLimiterDep,
    client_ip,
    limit_login_attempts,
    limit_reset_mails,
    limit_sign_ins_from_ip,
)

router = APIRouter(prefix="/auth", tags=["auth"], route_class=IdempotentRoute)

FORGOT_PASSWORD_ACCEPTED = "If an account exists for this e-mail, a reset link has been sent to it."


def _user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(EmailTaken, RateLimited),
)
async def register(
    body: RegisterRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limiter: RateLimiterDep,
    now: Now,
) -> TokenPair:
    await limiter.hit("register", client_ip(request), settings.register_limit)
    user = await service.register(
        session,
        passwords,
        email=body.email,
        password=body.password,
        timezone=body.timezone,
        locale=body.locale,
    )
    await verification.start(session, settings, user=user, email=user.email, now=now)
    pair, _ = await service.issue_tokens(
        session, settings, user, now, user_agent=_user_agent(request)
    )
    response.headers["Location"] = "/account"
    return pair


@router.post("/login", responses=error_responses(InvalidCredentials, AccountDeleted, RateLimited))
async def login(
    body: LoginRequest,
    request: Request,
    session: SessionDep,
    sessionmaker: SessionmakerDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limiter: RateLimiterDep,
    now: Now,
) -> TokenPair:
    await limit_login_attempts(limiter, request, settings, body.email)
    return await service.login(
        session,
        sessionmaker,
        settings,
        passwords,
        email=body.email,
        password=body.password,
        now=now,
        grace_days=settings.account_deletion_grace_days,
        user_agent=_user_agent(request),
    )


@router.post("/refresh", responses=error_responses(InvalidRefreshToken))
async def refresh(
    body: RefreshRequest,
    request: Request,
    session: SessionDep,
    sessionmaker: SessionmakerDep,
    settings: SettingsDep,
    now: Now,
) -> TokenPair:
    return await service.refresh(
        session,
        sessionmaker,
        settings,
        refresh_token=body.refresh_token,
        now=now,
        user_agent=_user_agent(request),
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: LogoutRequest, session: SessionDep, now: Now) -> Response:
    await service.logout(
        session, refresh_token=body.refresh_token, device_token=body.device_token, now=now
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/forgot-password",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(RateLimited),
)
async def forgot_password(
    body: ForgotPasswordRequest,
    session: SessionDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    request: Request,
    now: Now,
) -> Accepted:
    await limit_reset_mails(limiter, request, settings, body.email)
    service.request_password_reset(session, body.email, now=now)
    return Accepted(detail=FORGOT_PASSWORD_ACCEPTED)


@router.post(
    "/reset-password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(ResetTokenInvalid),
)
async def reset_password(
    body: ResetPasswordRequest, session: SessionDep, passwords: PasswordsDep, now: Now
) -> Response:
    await service.reset_password(
        session, passwords, token=body.token, new_password=body.new_password, now=now
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- Sign in with Google / Apple ---------------------------------------------------------------

OAUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_200_OK: {"description": "A known account, or one linked by its e-mail"},
    status.HTTP_201_CREATED: {"model": TokenPair, "description": "A new account"},
    **error_responses(
        InvalidIdToken,
        AccountDeleted,
        EmailTaken,
        RestoreExpired,
        RateLimited,
        ProviderNotConfigured,
        ProviderUnavailable,
    ),
}


class OAuthSignIn:
    """What both sign-in routes do, with what they need: the per-IP limit of every sign-in, the
    ID token verified, then the account found, linked or made (201 when made)."""

    def __init__(
        self,
        request: Request,
        response: Response,
        session: SessionDep,
        settings: SettingsDep,
        id_tokens: IdTokensDep,
        limiter: RateLimiterDep,
        now: Now,
    ) -> None:
        self.request, self.response, self.session = request, response, session
        self.settings, self.id_tokens, self.limiter, self.now = settings, id_tokens, limiter, now

    async def __call__(
        self, provider: Provider, body: OAuthSignInRequest, authorization_code: str | None = None
    ) -> TokenPair:
        await limit_sign_ins_from_ip(self.limiter, self.request, self.settings)
        verified = await self.id_tokens.verify(
            provider, body.id_token, nonce=body.nonce, now=self.now
        )
        signed_in = await identities.sign_in(
            self.session,
            self.settings,
            verified,
            identities.SignIn(
                restore=body.restore,
                authorization_code=authorization_code,
                timezone=body.timezone,
                locale=body.locale,
            ),
            now=self.now,
            user_agent=_user_agent(self.request),
        )
        if signed_in.created:
            self.response.status_code = status.HTTP_201_CREATED
            self.response.headers["Location"] = "/account"
        return signed_in.pair


OAuthSignInDep = Annotated[OAuthSignIn, Depends()]


@router.post("/oauth/google", responses=OAUTH_RESPONSES)
async def oauth_google(body: GoogleSignInRequest, sign_in: OAuthSignInDep) -> TokenPair:
    """Sign in with a Google ID token: 201 for a new account, 200 for a known or linked one."""
    return await sign_in(Provider.google, body)


@router.post("/oauth/apple", responses=OAUTH_RESPONSES)
async def oauth_apple(body: AppleSignInRequest, sign_in: OAuthSignInDep) -> TokenPair:
    """Sign in with an Apple ID token: 201 for a new account, 200 for a known or linked one."""
    return await sign_in(Provider.apple, body, body.authorization_code)
