"""TLS: certificates are verified by default; a private CA is trusted only through `ca_file`."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
import trustme

from tests import test_oddspapi, test_saba
from tests.collecting import collect_live, feeds_from_toml
from tests.conftest import query
from warehouse.config import ConfigError
from warehouse.simulate.oddspapi import OddsPapiSimulator
from warehouse.simulate.saba import SabaSimulator


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate for 127.0.0.1 from a CA nobody's system trusts, and that CA's PEM."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    pem = tmp_path_factory.mktemp("ca") / "private-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return server, pem


FEEDS = {
    "oddspapi": (lambda: OddsPapiSimulator(test_oddspapi.KEY, script=test_oddspapi.SEED, generate=False),
                 test_oddspapi.toml, {"OP_KEY": test_oddspapi.KEY}),
    "saba": (lambda: SabaSimulator(static_token=test_saba.TOKEN, rate=None, script=test_saba.SEED),
             test_saba.toml, test_saba.ENV),
}


def untrusted_errors(db_url: str) -> list[str]:
    return [row[0] for row in query(db_url, "SELECT detail->>'error' FROM collector_events WHERE event = 'error'")]


@pytest.mark.parametrize("feed", FEEDS)
def test_an_untrusted_certificate_is_refused_with_the_way_out(feed: str, db_url: str, tmp_path: Path, private_ca,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    make, toml, env = FEEDS[feed]
    simulator = make()
    simulator.tls = private_ca[0]
    with caplog.at_level(logging.WARNING):
        collect_live(simulator, db_url, tmp_path, toml, env, lambda: len(untrusted_errors(db_url)) >= 2)
    assert test_oddspapi.frames_stored(db_url) == 0
    error = untrusted_errors(db_url)[0]
    assert error.startswith("TLS certificate not trusted") and "ca_file" in error
    assert "TLS certificate not trusted" in caplog.text


@pytest.mark.parametrize("feed", FEEDS)
def test_ca_file_trusts_the_private_ca(feed: str, db_url: str, tmp_path: Path, private_ca) -> None:
    make, toml, env = FEEDS[feed]
    simulator = make()
    simulator.tls = private_ca[0]
    seeds = len(test_oddspapi.SEED if feed == "oddspapi" else test_saba.SEED)
    collect_live(simulator, db_url, tmp_path, lambda url: toml(url) + f'ca_file = "{private_ca[1]}"\n', env,
                 lambda: test_oddspapi.frames_stored(db_url) >= seeds)
    assert test_oddspapi.frames_stored(db_url) == seeds and untrusted_errors(db_url) == []
    urls = query(db_url, "SELECT detail->>'url' FROM collector_events WHERE event = 'connect'")
    assert urls and all(url.startswith(("wss://", "https://")) for (url,) in urls)


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    for path, words in [(tmp_path / "missing.pem", "missing.pem"), (tmp_path / "junk.pem", "junk.pem")]:
        text = test_oddspapi.toml("wss://127.0.0.1:1/v4/ws") + f'ca_file = "{path}"\n'
        with pytest.raises(ConfigError, match=f"ca_file '.*{words}' is not a readable PEM bundle"):
            feeds_from_toml(tmp_path, text, {"OP_KEY": "a-long-enough-key"})
