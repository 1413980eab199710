"""The event-stream decoder (warehouse/collect/sse.py), rule by rule of the WHATWG standard. Pure."""

from __future__ import annotations

import pytest

from warehouse.collect.sse import Comment, Event, EventStreamDecoder


def decode(*chunks: str) -> list[Event | Comment]:
    decoder = EventStreamDecoder()
    return [item for chunk in chunks for item in decoder.feed(chunk)]


def test_a_blank_line_dispatches_the_event() -> None:
    assert decode("data: a\n") == []
    assert decode("data: a\n\n") == [Event("a")]


def test_multi_line_data_is_joined_with_line_feeds() -> None:
    assert decode("data: one\ndata: two\ndata:\ndata: four\n\n") == [Event("one\ntwo\n\nfour")]


def test_one_leading_space_after_the_colon_is_stripped_and_no_more() -> None:
    assert decode("data:no space\n\ndata:  two spaces \n\n") == [Event("no space"), Event(" two spaces ")]


@pytest.mark.parametrize("ending", ["\r\n", "\n", "\r"])
def test_lines_end_with_crlf_lf_or_cr(ending: str) -> None:
    text = ending.join(["id: 7", "data: {\"a\": 1}", "", ": keep-alive", ""])
    assert decode(text) == [Event('{"a": 1}', id="7"), Comment(" keep-alive")]


def test_other_unicode_line_breaks_are_data_not_line_ends() -> None:
    # JSON may carry U+2028, U+0085 or a form feed unescaped: str.splitlines would cut the frame there.
    data = '{"name": "a\u2028b\u0085c\x0cd\x1ce"}'
    assert decode(f"data: {data}\n\n") == [Event(data)]


def test_a_crlf_split_between_two_chunks_is_one_line_end() -> None:
    assert decode("data: a\r", "\ndata: b\r", "\n\r", "\n") == [Event("a\nb")]


def test_a_line_split_anywhere_across_chunks_decodes_the_same() -> None:
    text = "id: 81723\r\ndata: {\"status\":1}\r\n\r\n: ka\r\nid: 81724\r\ndata: x\r\n\r\n"
    whole = decode(text)
    assert whole == [Event('{"status":1}', id="81723"), Comment(" ka"), Event("x", id="81724")]
    for cut in range(len(text) + 1):
        assert decode(text[:cut], text[cut:]) == whole, cut
    assert decode(*text) == whole  # one character at a time


def test_comments_are_returned_not_dropped() -> None:
    assert decode(":\n: ping 5s\n:x\n") == [Comment(""), Comment(" ping 5s"), Comment("x")]


def test_a_comment_inside_an_event_does_not_end_it() -> None:
    assert decode("data: a\n: ka\ndata: b\n\n") == [Comment(" ka"), Event("a\nb")]


def test_event_sets_the_type_for_one_event_only() -> None:
    assert decode("event: update\ndata: a\n\ndata: b\n\n") == [Event("a", event="update"), Event("b")]


def test_the_last_event_id_persists_until_the_server_sets_another() -> None:
    assert decode("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n") == [
        Event("a", id="1"), Event("b", id="1"), Event("c", id="")]


def test_an_id_containing_nul_is_ignored() -> None:
    assert decode("id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n") == [Event("a", id="1"), Event("b", id="1")]


def test_retry_takes_ascii_digits_only() -> None:
    assert decode("retry: 5000\ndata: a\n\ndata: b\n\n") == [Event("a", retry=5000), Event("b")]
    for bad in ("-5", "+5", "5s", " 5", "５", "5_0", ""):
        assert decode(f"retry: {bad}\ndata: a\n\n") == [Event("a")], bad


def test_a_line_without_a_colon_is_a_field_with_an_empty_value() -> None:
    assert decode("data\ndata\n\n") == [Event("\n")]
    assert decode("event\ndata: a\n\n") == [Event("a")]


def test_unknown_fields_are_ignored() -> None:
    assert decode("foo: bar\nData: x\ndata: a\n\n") == [Event("a")]


def test_a_block_without_data_dispatches_nothing_but_keeps_its_id() -> None:
    assert decode("event: x\nid: 9\n\ndata: a\n\n") == [Event("a", id="9")]  # and "x" is forgotten
    assert decode("\n\n\n") == []


def test_an_unfinished_event_at_the_end_of_the_stream_is_not_dispatched() -> None:
    assert decode("data: a\n\ndata: b") == [Event("a")]


def test_a_byte_order_mark_at_the_start_is_dropped_and_only_there() -> None:
    assert decode("\ufeff", "data: a\n\n") == [Event("a")]
    assert decode("\ufeffdata: a\n\ndata: \ufeffb\n\n") == [Event("a"), Event("\ufeffb")]
