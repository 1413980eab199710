"""Values made or encoded once and used again (docs/performance.md, "Collector CPU after the second
connection"): the same stored value as a value made or encoded afresh, whatever came before it."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import asyncpg
import psycopg
import pytest

from warehouse.config import WriterSettings
from warehouse.feeds.contract import FrameError
from warehouse.feeds.values import _number, parse_time, to_decimal
from warehouse.records import PriceTick, RawMessage
from warehouse.store.connection import encode_timestamptz, install_codecs
from warehouse.store.writer import Writer

CONN = UUID("6d2f1c9e-0b3a-4e5f-8a7b-1c2d3e4f5a6b")
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def fresh_micros(value: datetime) -> int:
    return (value - PG_EPOCH) // timedelta(microseconds=1)


def test_timestamptz_encodings_are_those_of_each_value_whatever_was_encoded_before() -> None:
    a = datetime(2026, 12, 6, 17, 0, 0, 123456, tzinfo=UTC)
    b = datetime(2026, 12, 6, 17, 0, 0, 123000, tzinfo=UTC)
    c = datetime(2026, 12, 6, 18, 0, tzinfo=UTC) + timedelta(days=400)
    b_again = datetime(2026, 12, 6, 17, 0, 0, 123000, tzinfo=UTC)  # equal to b, another object
    for value in (a, b, a, b, b, c, a, c, b_again, a, b, c, c):
        assert encode_timestamptz(value) == (fresh_micros(value),)
    # What asyncpg's own encoder takes besides aware datetimes, between cached ones, as before.
    assert encode_timestamptz(datetime.max) == (2**63 - 1,)
    assert encode_timestamptz(a) == (fresh_micros(a),)
    assert encode_timestamptz(datetime.min) == (-(2**63),)
    naive = datetime(2026, 1, 1, 12, 0)
    assert encode_timestamptz(naive) == (fresh_micros(naive.astimezone(UTC)),)
    assert encode_timestamptz(date(2026, 1, 1)) == (fresh_micros(datetime(2026, 1, 1).astimezone(UTC)),)
    with pytest.raises(TypeError):
        encode_timestamptz("2026-01-01")
    assert encode_timestamptz(b) == (fresh_micros(b),)


def test_a_timestamp_text_parsed_again_gives_the_same_value_and_a_bad_one_is_refused_every_time() -> None:
    first = parse_time("2026-12-06T17:00:00.123+00:00")
    assert parse_time("2026-12-06T17:00:00.123+00:00") is first
    assert first == datetime(2026, 12, 6, 17, 0, 0, 123000, tzinfo=UTC)
    assert parse_time("2026-12-06T17:00:00.123") == first  # no zone: UTC
    assert parse_time("2026-12-06T19:00:00.123+02:00") == first
    assert parse_time("2026-12-06T19:00:00.123+02:00").utcoffset() == timedelta(hours=2)  # the zone sent
    for bad in ("", "yesterday", ""):
        with pytest.raises(FrameError):
            parse_time(bad)
    assert parse_time(None) is None


@pytest.mark.parametrize("value", [1000, 1000.0, "1000", "1000.0", "1E+3", 2.5, "2.50", 10**19, 0.1, "-0.25"])
def test_a_decimal_made_again_is_the_decimal_of_the_number_sent(value: object) -> None:
    expected = _number(value)
    for _ in range(3):
        got = to_decimal(value)
        assert got == expected and got.as_tuple() == expected.as_tuple()  # the scale too: 1000 is not 1000.0


def test_decimals_of_equal_keys_of_other_types_or_signs_are_not_mixed_up() -> None:
    # 1000 == 1000.0 and 0.0 == -0.0 as dict keys; their Decimals differ in scale or sign.
    for value, text in ((1000, "1000"), (1000.0, "1000.0"), (1000, "1000"), (1000.0, "1000.0"),
                        (0.0, "0.0"), (-0.0, "-0.0"), (0.0, "0.0"), (True, None)):
        if text is None:
            with pytest.raises(FrameError):
                to_decimal(value)
        else:
            assert str(to_decimal(value)) == text


def test_a_remembered_decimal_is_still_checked_against_its_bound() -> None:
    assert to_decimal("1.0") == Decimal("1.0")
    with pytest.raises(FrameError):
        to_decimal("1.0", above=1)
    assert to_decimal("1.01", above=1) == Decimal("1.01")
    for _ in range(2):  # refused, not remembered: refused again
        with pytest.raises(FrameError):
            to_decimal("1e-30")
        with pytest.raises(FrameError):
            to_decimal(1e40)


def test_ticks_sharing_their_times_store_the_times_each_was_given(storage_url: str, tmp_path: Path) -> None:
    """Frames received together share received_at; the ticks of one frame share source_ts (parse_time of
    one text): every row keeps its own times, its raw id, and the exact stake, on every storage."""
    r1 = datetime(2026, 12, 6, 17, 0, 0, 1, tzinfo=UTC)
    r1_again = datetime(2026, 12, 6, 17, 0, 0, 1, tzinfo=UTC)  # equal to r1, another object
    r2 = datetime(2026, 12, 6, 17, 0, 0, 2, tzinfo=UTC)
    units = []
    expected = []
    for seq, at in enumerate((r1, r1, r1_again, r2, r2, r2), 1):
        changed = parse_time(f"2026-12-06T16:59:59.{seq:03d}+00:00")
        stake = to_decimal(1000.0 if seq % 2 else 1000)
        ticks = [PriceTick(at, "oddspapi", "pinnacle", f"f{seq}", "101", outcome, 1.5 + seq, player_id="0",
                           active=True, max_stake=stake, source_ts=changed, attrs={"n": seq})
                 for outcome in ("101", "102")]
        units.append((RawMessage(at, "oddspapi", CONN, seq, "price", b'{"seq": %d}' % seq), ticks))
        expected += [(seq, at, changed, str(stake)) for _ in ticks]

    async def main() -> None:
        async with Writer(storage_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            for unit in units:
                await writer.put(*unit)

    asyncio.run(asyncio.wait_for(main(), 60))
    with psycopg.connect(storage_url) as conn:
        rows = conn.execute(
            "SELECT r.seq, p.received_at, p.source_ts, p.max_stake::text FROM price_ticks p"
            " JOIN raw_messages r ON r.id = p.raw_id ORDER BY r.seq, p.outcome_id").fetchall()
        stored = conn.execute("SELECT seq, received_at, payload::text FROM raw_messages ORDER BY seq").fetchall()
    assert rows == expected
    assert stored == [(seq, unit[0].received_at, f'{{"seq": {seq}}}') for seq, unit in enumerate(units, 1)]


def numerics() -> list[Decimal]:
    """Every shape a numeric takes: signs, zeros with and without scale, equal values at other scales
    (1000, 1E+3, 1000.0: one key of a dict, three stored values), a digit group's edges, the longest and
    smallest the lake's decimal and PostgreSQL take, NaN and the infinities; then random ones."""
    texts = ["0", "-0", "0.00", "0E+5", "1000", "1E+3", "1000.0", "1000.000", "-1000.5", "0.0001", "0.00001",
             "9999", "10000", "99999.9999", "-0.000123", "123.456", "1E+30", "1.5E-7", "2.59", "250.5",
             "12345678901234567890.123456789012345678", "1" + "0" * 1000, "0." + "0" * 999 + "1", "1E-16383",
             "-" + "9" * 131, "NaN", "Infinity", "-Infinity"]
    rng = random.Random(28)
    for _ in range(300):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))
        texts.append(f"{rng.choice(['', '-'])}{digits}E{rng.randint(-60, 40)}")
    values = [Decimal(text) for text in texts]
    return values + values[::-1]  # each object again, after others equal to it: encoded by identity, not value


def test_numerics_reach_postgresql_as_asyncpg_own_encoder_sends_them(storage_url: str) -> None:
    """The writer's numeric codec against asyncpg's own, value for value: the same number, scale and sign
    stored (numeric_send of what each sent), the same value read back, the same refusal."""

    async def main() -> None:
        own = await asyncpg.connect(storage_url)
        ours = await asyncpg.connect(storage_url)
        try:
            await install_codecs(ours)
            for value in numerics():
                sent = "SELECT numeric_send($1::numeric)"
                assert await ours.fetchval(sent, value) == await own.fetchval(sent, value), value
                back_ours, back_own = await ours.fetchval("SELECT $1::numeric", value), await own.fetchval(
                    "SELECT $1::numeric", value)
                assert str(back_ours) == str(back_own), value
            # Through COPY, as the writer sends them: there an encoder's exception arrives as it is raised (a
            # query wraps it in DataError), and the writer tells a data error from an outage by its type.
            for conn in (own, ours):
                await conn.execute("CREATE TEMP TABLE refused (v numeric)")
            for value in (Decimal("1E-16384"), Decimal("1E+262144"), Decimal(10) ** 300_000, 1.5, 7, "12.50"):
                outcomes = []
                for conn in (own, ours):
                    try:
                        await conn.copy_records_to_table("refused", records=[(value,)])
                        outcomes.append(await conn.fetchval("SELECT numeric_send(v) FROM refused"))
                        await conn.execute("TRUNCATE refused")
                    except Exception as exc:
                        outcomes.append((type(exc), str(exc)))
                assert outcomes[0] == outcomes[1], value
        finally:
            await own.close()
            await ours.close()

    asyncio.run(asyncio.wait_for(main(), 60))
