"""Bearer tokens from a login endpoint (warehouse/collect/auth.py), against the Saba simulator's
/login and /refreshToken on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from warehouse.collect.auth import RENEW_BEFORE_S, LoginFailed, TokenSource
from warehouse.feeds.contract import Login
from warehouse.simulate.saba import SabaFaults, SabaSimulator

MEMBER = "member-secret-7731"


def with_server(test: Callable[[SabaSimulator, str], Awaitable[None]], **kwargs: object) -> SabaSimulator:
    simulator = SabaSimulator(vendor_id="vendor", member_id=MEMBER, rate=None, **kwargs)  # type: ignore[arg-type]

    async def main() -> None:
        base = await simulator.start()
        try:
            await test(simulator, base)
        finally:
            await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    return simulator


def login(base: str, member: str = MEMBER, **kwargs: object) -> Login:
    return Login(url=f"{base}/login", refresh_url=f"{base}/refreshToken",
                 body={"vendor_id": "vendor", "vendor_member_id": member}, **kwargs)  # type: ignore[arg-type]


def test_logs_in_once_and_reuses_the_token_while_it_is_fresh() -> None:
    async def test(simulator: SabaSimulator, base: str) -> None:
        tokens = TokenSource(login(base))
        first = await tokens.token()
        assert first and await tokens.token() == first
        await tokens.aclose()
        assert (simulator.logins, simulator.refreshes) == (1, 0)

    with_server(test)


def test_a_token_within_a_minute_of_expiry_is_renewed_by_refresh() -> None:
    async def test(simulator: SabaSimulator, base: str) -> None:
        # a lifetime of exactly RENEW_BEFORE_S: every token is already due for renewal
        tokens = TokenSource(login(base, lifetime_s=RENEW_BEFORE_S))
        first = await tokens.token()
        second = await tokens.token()
        await tokens.aclose()
        assert second != first
        assert (simulator.logins, simulator.refreshes) == (2, 1)

    with_server(test)


def test_a_refused_refresh_logs_in_again() -> None:
    async def test(simulator: SabaSimulator, base: str) -> None:
        tokens = TokenSource(login(base, lifetime_s=RENEW_BEFORE_S))
        first = await tokens.token()
        second = await tokens.token()  # /refreshToken answers 401: /login instead
        await tokens.aclose()
        assert second and second != first
        assert (simulator.logins, simulator.refreshes) == (2, 0)

    with_server(test, faults=SabaFaults(refuse_refresh=True))


def test_invalidate_makes_the_next_call_log_in_anew() -> None:
    async def test(simulator: SabaSimulator, base: str) -> None:
        tokens = TokenSource(login(base))
        first = await tokens.token()
        tokens.invalidate()
        assert await tokens.token() != first
        await tokens.aclose()
        assert (simulator.logins, simulator.refreshes) == (2, 0)

    with_server(test)


@pytest.mark.parametrize(("member", "field", "message", "status"), [
    ("wrong-member-secret", "access_token", "login refused: HTTP 401", 401),
    (MEMBER, "jwt", "login answer has no jwt", 200),
])
def test_a_refused_login_is_login_failed_without_the_credentials(member: str, field: str, message: str,
                                                                 status: int) -> None:
    async def test(simulator: SabaSimulator, base: str) -> None:
        tokens = TokenSource(login(base, member=member, token_field=field))
        with pytest.raises(LoginFailed) as caught:
            await tokens.token()
        await tokens.aclose()
        assert str(caught.value) == message and caught.value.status == status
        assert member not in repr(caught.value.args) and "vendor" not in str(caught.value)

    with_server(test)
