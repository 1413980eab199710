"""Bearer tokens from a vendor login endpoint, renewed before they expire (Saba: 10 minutes)."""

from __future__ import annotations

import ssl
import time

import httpx

from warehouse.collect.transports import address, tls_context
from warehouse.feeds.contract import Login

RENEW_BEFORE_S = 60.0


class LoginFailed(Exception):
    """Login or refresh was refused; the message holds the status, never the credentials."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class TokenSource:
    def __init__(self, login: Login, timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> None:
        self.login = login
        self._client = httpx.AsyncClient(timeout=timeout, verify=tls or tls_context())
        self._token: str | None = None
        self._expires = 0.0

    async def token(self) -> str:
        """A token valid for at least another minute: refreshed, or logged in anew."""
        if self._token and time.monotonic() < self._expires - RENEW_BEFORE_S:
            return self._token
        url = self.login.refresh_url if self._token and self.login.refresh_url else self.login.url
        try:
            response = await self._client.post(url, json=self.login.body)
        except httpx.HTTPError as exc:
            raise LoginFailed(None, f"login request to {address(url)} failed: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200 and url != self.login.url:
            self._token = None
            return await self.token()  # refresh refused: log in again
        if response.status_code != 200:
            raise LoginFailed(response.status_code, f"login refused: HTTP {response.status_code}")
        try:
            token = response.json()[self.login.token_field]
        except (ValueError, KeyError, TypeError):
            raise LoginFailed(response.status_code, f"login answer has no {self.login.token_field}") from None
        self._token = str(token)
        self._expires = time.monotonic() + self.login.lifetime_s
        return self._token

    def invalidate(self) -> None:
        self._token = None

    async def aclose(self) -> None:
        await self._client.aclose()
