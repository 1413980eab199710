"""The event stream as the collector reads it (warehouse/collect/sse.py: httpx-sse, with the byte
framing below it), rule by rule of the WHATWG standard ("Server-sent events", "Interpreting an
event stream"). Real httpx-sse, fed bytes in chunks; no network (tests/test_saba.py has that)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warehouse.collect.sse import Event, EventStream, _lines

LIMIT = 1 << 20


class Decoded:
    """What a stream gave: its events, and where it left the last event id and the reconnection time."""

    def __init__(self, events: list[Event], last_event_id: str | None, retry_ms: int | None, heard: int) -> None:
        self.events, self.last_event_id, self.retry_ms, self.heard = events, last_event_id, retry_ms, heard


def read(*chunks: bytes | str, limit: int = LIMIT, last_event_id: str | None = None) -> Decoded:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk.encode() if isinstance(chunk, str) else chunk

    async def main() -> Decoded:
        heard = 0

        def hear() -> None:
            nonlocal heard
            heard += 1

        stream = EventStream(body(), max_data_bytes=limit, last_event_id=last_event_id, heard=hear)
        events = []
        while True:
            try:
                events.append(await stream.next())
            except StopAsyncIteration:
                return Decoded(events, stream.last_event_id, stream.retry_ms, heard)

    return asyncio.run(asyncio.wait_for(main(), 60))


def events(*chunks: bytes | str, **kwargs: object) -> list[Event]:
    return read(*chunks, **kwargs).events  # type: ignore[arg-type]


# -- the standard's field rules ----------------------------------------------------------------


def test_a_blank_line_dispatches_the_event() -> None:
    assert events("data: a\n") == []
    assert events("data: a\n\n") == [Event("a")]


def test_multi_line_data_is_joined_with_line_feeds() -> None:
    assert events("data: one\ndata: two\ndata:\ndata: four\n\n") == [Event("one\ntwo\n\nfour")]


def test_one_leading_space_after_the_colon_is_stripped_and_no_more() -> None:
    assert events("data:no space\n\ndata:  two spaces \n\n") == [Event("no space"), Event(" two spaces ")]


@pytest.mark.parametrize("ending", ["\r\n", "\n", "\r"])
def test_lines_end_with_crlf_lf_or_cr(ending: str) -> None:
    text = ending.join(["id: 7", 'data: {"a": 1}', "", ": keep-alive", "data: b", "", ""])
    assert events(text) == [Event('{"a": 1}', id="7"), Event("b", id="7")]


@pytest.mark.parametrize("text", ["data: a\r\ndata: b\rdata: c\n\r\n", "data: a\rdata: b\r\ndata: c\r\r\n",
                                  "data: a\ndata: b\rdata: c\r\n\n", "data: a\r\ndata: b\r\ndata: c\r\r"])
def test_line_ends_mixed_in_one_chunk(text: str) -> None:
    assert events(text) == [Event("a\nb\nc")]


@settings(max_examples=500, deadline=None)
@given(chunk=st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"data: x"]), max_size=30).map(b"".join))
def test_a_chunk_splits_at_crlf_lf_and_cr_alike(chunk: bytes) -> None:
    assert _lines(chunk) == chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")


def test_a_block_ending_in_cr_is_dispatched_without_waiting_for_the_next_byte() -> None:
    async def main() -> Event:
        more = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b"data: a\r\r"
            await more.wait()  # the server says nothing more for now
            yield b"data: b\r\r"

        return await EventStream(body(), max_data_bytes=LIMIT).next()

    assert asyncio.run(asyncio.wait_for(main(), 10)) == Event("a")


def test_other_unicode_line_breaks_are_data_not_line_ends() -> None:
    # JSON may carry U+2028, U+0085 or a form feed unescaped: str.splitlines would cut the frame there.
    data = '{"name": "a\u2028b\u0085c\x0cd\x1ce"}'
    assert events(f"data: {data}\n\n") == [Event(data)]


def test_a_crlf_split_between_two_chunks_is_one_line_end() -> None:
    assert events("data: a\r", "\ndata: b\r", "\n\r", "\n") == [Event("a\nb")]


def test_comments_are_not_events_and_do_not_end_one() -> None:
    assert events(":\n: ping 5s\n:x\n\n") == []
    assert events("data: a\n: ka\ndata: b\n\n") == [Event("a\nb")]


def test_event_sets_the_type_for_one_event_only() -> None:
    assert events("event: update\ndata: a\n\ndata: b\n\n") == [Event("a", type="update"), Event("b")]
    assert events("event: lost\n\ndata: b\n\n") == [Event("b")]  # a block without data forgets its type


def test_a_line_without_a_colon_is_a_field_with_an_empty_value() -> None:
    assert events("data\ndata\n\n") == [Event("\n")]
    assert events("event\ndata: a\n\n") == [Event("a")]


def test_an_event_with_empty_data_is_an_event() -> None:
    assert events("data:\n\ndata\n\n") == [Event(""), Event("")]


def test_unknown_fields_are_ignored_and_names_are_case_sensitive() -> None:
    assert events("foo: bar\nData: x\nDATA: y\ndata: a\n\n") == [Event("a")]
    assert events("Data: x\n\n") == []


def test_an_unfinished_event_at_the_end_of_the_stream_is_not_dispatched() -> None:
    decoded = read("id: 1\ndata: a\n\nid: 2\ndata: b")
    assert decoded.events == [Event("a", id="1")]
    assert decoded.last_event_id == "1"  # the id of an event never dispatched is not the last event id


def test_a_byte_order_mark_at_the_start_is_dropped_and_only_there() -> None:
    assert events("\ufeff", "data: a\n\n") == [Event("a")]
    assert events("\ufeffdata: a\n\ndata: \ufeffb\n\n") == [Event("a"), Event("\ufeffb")]
    assert events(b"\xef", b"\xbb", b"\xbfdata: a\n\n") == [Event("a")]
    assert events("\ufeff\ufeffdata: a\n\n") == []  # only one: the second makes the field name unknown


def test_the_stream_is_utf8_and_a_bad_byte_becomes_a_replacement_character() -> None:
    assert events(b"data: \xff\xc3\xa9\n\n") == [Event("\ufffd\u00e9")]


# -- the last event id -------------------------------------------------------------------------


def test_the_last_event_id_persists_until_the_server_sets_another() -> None:
    decoded = read("id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n")
    assert decoded.events == [Event("a", id="1"), Event("b", id="1"), Event("c", id="2")]
    assert decoded.last_event_id == "2"


def test_an_id_on_a_block_without_data_moves_the_last_event_id_without_an_event() -> None:
    decoded = read("id: 1\ndata: a\n\nid: 2\n\n")
    assert decoded.events == [Event("a", id="1")]
    assert decoded.last_event_id == "2"


@pytest.mark.parametrize("empty_id", ["id\n", "id:\n", "id: \n"])
def test_an_empty_id_resets_the_last_event_id(empty_id: str) -> None:
    decoded = read(f"id: 1\ndata: a\n\n{empty_id}\n")
    assert decoded.events == [Event("a", id="1")]
    assert decoded.last_event_id is None  # the reconnect sends no Last-Event-ID
    assert read(f"id: 1\ndata: a\n\n{empty_id}data: b\n\n").events == [Event("a", id="1"), Event("b")]


def test_an_id_containing_nul_is_ignored() -> None:
    decoded = read("id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\nid: 4\x00\n\n")
    assert decoded.events == [Event("a", id="1"), Event("b", id="1")]
    assert decoded.last_event_id == "1"


def test_the_id_survives_blocks_that_are_not_events() -> None:
    decoded = read("id: 1\ndata: a\n\n: KEEPALIVE\n\n\n\nevent: x\n\nretry: 10\n\n")
    assert decoded.events == [Event("a", id="1")]
    assert decoded.last_event_id == "1"


def test_a_reconnect_goes_on_from_the_id_it_sent() -> None:
    # Like a browser's EventSource: events without an id carry the id of the Last-Event-ID header...
    decoded = read("data: a\n\n: ka\n\n", last_event_id="81723")
    assert decoded.events == [Event("a", id="81723")]
    assert decoded.last_event_id == "81723"
    # ...until the server sets another or clears it
    assert read("id\n\n", last_event_id="81723").last_event_id is None
    assert read("id: 9\n\n", last_event_id="81723").last_event_id == "9"


# -- retry -------------------------------------------------------------------------------------


def test_retry_sets_the_reconnection_time_with_or_without_an_event() -> None:
    decoded = read("retry: 5000\ndata: a\n\ndata: b\n\n")
    assert decoded.events == [Event("a"), Event("b")] and decoded.retry_ms == 5000
    assert read("retry: 7000\n\n").retry_ms == 7000
    assert read("retry: 7000\n\nretry: 20\n\n").retry_ms == 20


@pytest.mark.parametrize("bad", ["-5", "-1", "+5", "5s", " 5", "５", "5_0", "", "1000x"])
def test_retry_takes_ascii_digits_only(bad: str) -> None:
    decoded = read(f"retry: {bad}\ndata: a\n\n")
    assert decoded.events == [Event("a")] and decoded.retry_ms is None
    assert read(f"retry: 300\n\nretry: {bad}\n\n").retry_ms == 300  # a bad value leaves the last good one


def test_a_retry_too_long_for_a_number_is_ignored_and_the_events_after_it_stay_whole() -> None:
    """httpx-sse drops a retry `int()` refuses (over 4,300 digits) and yields nothing for its block:
    every later event was matched with the block before it (A lost, an empty event made up)."""
    stream = "retry: " + "1" * 5000 + "\n\ndata: A\n\ndata: B\n\nevent: x\n\ndata: C\n\n"
    for chunks in ((stream,), tuple(stream[i:i + 7] for i in range(0, len(stream), 7))):
        decoded = read(*chunks)
        assert decoded.events == [Event("A"), Event("B"), Event("C")] and decoded.retry_ms is None


# -- chunks, sizes, liveness -------------------------------------------------------------------

# A BOM, CRLF line ends, a comment, and 2-, 3- and 4-byte characters in data, in an id and in a type.
STREAM = ("\ufeffid: 81723\r\ndata: {\"name\":\"Bayern München\",\"odds\":\"€1.95\",\"clef\":\"𝄞\"}\r\n\r\n"
          ": KEEPALIVE\r\nid: é-81724\r\nevent: 变化\r\ndata: x\r\ndata: ¥\r\n\r\n").encode()
WHOLE = [Event('{"name":"Bayern München","odds":"€1.95","clef":"𝄞"}', id="81723"),
         Event("x\n¥", type="变化", id="é-81724")]


def test_the_sample_stream_decodes_as_expected() -> None:
    assert events(STREAM) == WHOLE


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_a_chunk_boundary_anywhere_decodes_the_same(cut: int) -> None:
    # every byte of every multi-byte character (and of the BOM, and between CR and LF) is a boundary once
    assert events(STREAM[:cut], STREAM[cut:]) == WHOLE


def test_one_byte_at_a_time_decodes_the_same_and_every_byte_is_heard() -> None:
    decoded = read(*(bytes([b]) for b in STREAM))
    assert decoded.events == WHOLE
    assert decoded.heard == len(STREAM)


# Every kind of block, many in one chunk as a busy stream brings them: each event keeps the id, type and
# retry of its own block, whatever blocks without data come between.
MIXED = ("id: 1\ndata: a\n\n: ka\n\n\nid: 2\n\nevent: t\ndata: b\n\nid\n\nretry: 70\n\nevent: u\n\n"
         "data: c\nid: 3\n\nid: 4\x00\nretry: x\ndata:\n\nevent:\nid: 5\n\ndata: d\n\n")
MIXED_EVENTS = [Event("a", id="1"), Event("b", type="t", id="2"), Event("c", id="3"), Event("", id="3"),
                Event("d", id="5")]


@pytest.mark.parametrize("chunk", [1, 2, 5, len(MIXED)])
def test_many_blocks_in_one_chunk_decode_as_one_at_a_time(chunk: int) -> None:
    wire = MIXED.encode()
    decoded = read(*(wire[i:i + chunk] for i in range(0, len(wire), chunk)))
    assert decoded.events == MIXED_EVENTS
    assert decoded.last_event_id == "5" and decoded.retry_ms == 70


def test_an_event_past_the_limit_is_cut_off_with_its_size_and_the_stream_goes_on() -> None:
    big = "x" * 100
    decoded = read(f"id: 1\ndata: {big}\ndata: {big}\nid: 2\n\ndata: small\n\n", limit=150)
    cut, small = decoded.events
    # only the limit's worth of the data went on; the size counts all of it (the two lines and their LF)
    assert cut == Event(f"{big}\n{'x' * 49}", id="2", cut_size=201)
    assert small == Event("small", id="2")  # and the id that came after the cut still counted


def test_the_limit_counts_the_data_as_stored_exactly() -> None:
    assert events("id: 1\ndata: 12345\ndata: 6789\n\n", limit=10) == [Event("12345\n6789", id="1")]
    assert events("id: 1\ndata: 12345\ndata: 67890\n\n", limit=10) == [Event("12345\n6789", id="1", cut_size=11)]
    assert events("data:1234567890\n\n", limit=10) == [Event("1234567890")]
    assert events("data:12345678901\n\n", limit=10) == [Event("1234567890", cut_size=11)]


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_a_cut_event_is_the_same_in_any_chunking(chunk: int) -> None:
    wire = b"id: 5\r\ndata: " + "é".encode() * 3000 + b"\r\ndata: tail\r\n\r\ndata: next\r\n\r\n"
    chunks = [wire[i:i + chunk] for i in range(0, len(wire), chunk)]
    cut, after = events(*chunks, limit=1000)
    assert cut.cut_size == 6000 + 1 + 4 and cut.id == "5"
    assert cut.data == "é" * 500  # exactly 1000 bytes went on
    assert after == Event("next", id="5")


def test_a_line_longer_than_the_limit_that_is_not_data_is_dropped() -> None:
    long_id, long_comment = "9" * 50, ":" + "c" * 50
    decoded = read(f"id: 1\ndata: a\n\nid: {long_id}\n{long_comment}\ndata: b\n\n", limit=20)
    assert decoded.events == [Event("a", id="1"), Event("b", id="1")]


@pytest.mark.timeout(60)
def test_a_long_event_costs_linear_time() -> None:
    # 8 MiB in 1 KiB chunks: a decoder that re-joins or re-scans what it holds at every chunk copies
    # some 32 GiB here (the one this replaced: minutes); a linear one takes well under a second.
    data = b'{"status":1,"pad":"' + b"x" * (8 << 20) + b'"}'
    wire = b"id: 1\r\ndata: " + data + b"\r\n\r\n"
    (event,) = events(*(wire[i:i + 1024] for i in range(0, len(wire), 1024)), limit=16 << 20)
    assert event.data.encode() == data and event.cut_size is None
