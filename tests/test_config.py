"""Settings precedence: arguments, then environment, then config file, then defaults."""

from __future__ import annotations

import pytest

from dexorder_feeds.config import resolve_settings
from dexorder_feeds.vocabulary.errors import InvalidRequestError


def test_defaults_are_the_embedded_warehouse_in_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEXORDER_CACHE_DIR", str(tmp_path / "c"))
    settings = resolve_settings()
    assert settings.embedded and settings.namespace == "trading" and settings.request_timeout == 30.0
    assert settings.iceberg_catalog_uri == f"sqlite:///{(tmp_path / 'c' / 'catalog.db').resolve()}"


def test_precedence(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(
        'namespace = "from_file"\nrequest_timeout = 12\nrelay_endpoint = "tcp://127.0.0.1:1"\n'
        'notification_endpoint = "tcp://127.0.0.1:2"\n[sources]\nBINANCE = "files:/a"\n'
        '[catalog_properties]\n"s3.endpoint" = "http://file"\n'
    )
    monkeypatch.setenv("DEXORDER_CONFIG", str(config))
    s = resolve_settings()
    assert (s.namespace, s.request_timeout, s.relay_endpoint, s.sources["BINANCE"]) == ("from_file", 12.0, "tcp://127.0.0.1:1", "files:/a")
    monkeypatch.setenv("DEXORDER_NAMESPACE", "from_env")
    monkeypatch.setenv("DEXORDER_SOURCES", "BINANCE=files:/b, KRAKEN=ccxt:kraken")
    monkeypatch.setenv("DEXORDER_CATALOG__S3__ENDPOINT", "http://env")
    s = resolve_settings()
    assert s.namespace == "from_env" and s.sources == {"BINANCE": "files:/b", "KRAKEN": "ccxt:kraken"}
    assert s.catalog_properties["s3.endpoint"] == "http://env"
    s = resolve_settings(namespace="from_arg", sources=["BINANCE=sim"], catalog_properties={"s3.endpoint": "http://arg"})
    assert s.namespace == "from_arg" and s.sources["BINANCE"] == "sim" and s.catalog_properties["s3.endpoint"] == "http://arg"


def test_secrets_stay_out_of_repr(monkeypatch):
    s = resolve_settings(iceberg_catalog_uri="postgresql+psycopg://me:hunter22@db/x",
                         catalog_properties={"credential": "id:sekrit-value", "warehouse": "s3://w"})
    text = repr(s)
    assert "hunter22" not in text and "sekrit-value" not in text and "s3://w" in text


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(relay_endpoint="tcp://127.0.0.1:1"), "go together"),
        (dict(request_timeout=-1), "positive"),
        (dict(request_timeout="soon"), "number of seconds"),
        (dict(sources=["BINANCE"]), "EXCHANGE=SPEC"),
    ],
)
def test_bad_settings(kwargs, text):
    with pytest.raises(InvalidRequestError, match=text):
        resolve_settings(**kwargs)


def test_unreadable_config_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(InvalidRequestError, match="cannot be read"):
        resolve_settings(config_file=bad)
    with pytest.raises(InvalidRequestError, match="does not exist"):
        resolve_settings(config_file=tmp_path / "missing.toml")
