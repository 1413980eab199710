"""Secrets never reach a log, a table or an exception message (warehouse/redact.py). Pure."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

from warehouse.redact import MASK, Redactor

KEY = "k3y+with/odd=chars&more"  # a secret whose URL-encoded forms differ from itself
TOKEN = "eyJhbGciOiJIUzI1NiJ9.payload.signature"


def test_a_configured_secret_is_masked_wherever_it_occurs() -> None:
    redactor = Redactor([KEY])
    assert redactor.text(f"wss://h/ws?key={KEY} failed ({KEY})") == f"wss://h/ws?key={MASK} failed ({MASK})"


def test_its_url_encoded_forms_too() -> None:
    redactor = Redactor([KEY])
    assert quote(KEY, safe="") != KEY != quote_plus(KEY)
    for form in (quote(KEY, safe=""), quote_plus(KEY)):
        assert redactor.text(f"GET /ws?x={form}&y=1") == f"GET /ws?x={MASK}&y=1", form


def test_the_longest_secret_is_masked_first() -> None:
    redactor = Redactor(["abcdefgh", "abcdefgh-longer"])
    assert redactor.text("abcdefgh-longer and abcdefgh") == f"{MASK} and {MASK}"


def test_credential_query_parameters_are_masked_whatever_their_value() -> None:
    redactor = Redactor([])
    text = ("wss://h/ws?apiKey=unknown1&api_key=u2&token=u3&access_token=u4&authorization=u5&password=u6"
            "&secret=u7&APIKEY=u8&fixture=f1")
    assert redactor.text(text) == (f"wss://h/ws?apiKey={MASK}&api_key={MASK}&token={MASK}&access_token={MASK}"
                                   f"&authorization={MASK}&password={MASK}&secret={MASK}&APIKEY={MASK}&fixture=f1")


def test_bearer_tokens_are_masked_in_every_spelling() -> None:
    redactor = Redactor([])
    assert redactor.text(f"Authorization: Bearer {TOKEN}") == f"Authorization: Bearer {MASK}"
    assert redactor.text(f"?authorization=bearer%20{TOKEN}") == f"?authorization={MASK}"
    assert redactor.text(f"bearer%20{TOKEN} and BEARER+{TOKEN}") == f"bearer%20{MASK} and BEARER+{MASK}"


def test_headers_that_carry_credentials_are_masked_whole_and_the_rest_redacted() -> None:
    redactor = Redactor([KEY])
    headers = {"Authorization": f"Bearer {TOKEN}", "x-api-key": "anything", "Cookie": "session=1",
               "Accept": "text/event-stream", "Last-Event-ID": "81723", "X-Echo": f"the key is {KEY}"}
    assert redactor.headers(headers) == {"Authorization": MASK, "x-api-key": MASK, "Cookie": MASK,
                                         "Accept": "text/event-stream", "Last-Event-ID": "81723",
                                         "X-Echo": f"the key is {MASK}"}


def test_frames_mask_only_the_configured_secrets() -> None:
    redactor = Redactor([KEY, TOKEN])
    frame = f'{{"echo": "{KEY}", "auth": "Bearer {TOKEN}", "note": "token=public"}}'.encode()
    assert redactor.data(frame) == f'{{"echo": "{MASK}", "auth": "Bearer {MASK}", "note": "token=public"}}'.encode()
    assert redactor.data(b'{"a": 1}') == b'{"a": 1}'


def test_empty_secrets_are_ignored() -> None:
    assert Redactor(["", KEY]).text("plain text") == "plain text"
