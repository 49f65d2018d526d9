"""Settings and URL resolution: which database and which names stage4 works with."""

from __future__ import annotations

from pathlib import Path

import pytest

from stage4 import config
from stage4.errors import ConfigError


class TestUrls:
    def test_explicit_url_wins_over_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/envdb")
        assert config.explicit_url("postgres://me@h:5433/mine") == "postgresql://me@h:5433/mine"

    def test_environment_used_when_no_argument(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/envdb")
        assert config.explicit_url(None) == "postgresql://env@h/envdb"

    def test_no_url_means_embedded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        assert config.explicit_url(None) is None

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            (
                "mysql://u:pw@h/db",
                "malformed database URL 'mysql://u:***@h/db': expected "
                "postgresql://user@host:port/dbname",
            ),
            (
                "postgresql://u:pw@h:notaport/db",
                "malformed database URL 'postgresql://u:***@h:notaport/db': bad port",
            ),
            (
                "postgresql://u@h:5432",
                "malformed database URL 'postgresql://u@h:5432': no database name",
            ),
        ],
    )
    def test_malformed_urls_are_refused_without_the_password(self, url, message) -> None:
        with pytest.raises(ConfigError) as e:
            config.check_url(url)
        assert str(e.value) == message
        assert "pw" not in str(e.value)

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            (
                "postgresql://u:a%zzb@h/db",
                "a '%' not followed by two hex digits (write a literal % as %25)",
            ),
            ("postgresql://u:a b@h/db", "it contains a space (write it as %20)"),
            (
                "postgresql://u:a@b@h/db",
                "more than one '@' (write an '@' in the user or password as %40)",
            ),
            ("postgresql://u:a/b@h/db", "a '/' in the user or password (write it as %2F)"),
            (
                "postgresql://u:a?b@h/db",
                "a '?' or '#' in the user or password (write them as %3F and %23)",
            ),
        ],
        ids=["percent", "space", "at", "slash", "question"],
    )
    def test_passwords_a_driver_would_misread_are_refused(self, url: str, why: str) -> None:
        with pytest.raises(ConfigError) as e:
            config.check_url(url)
        assert str(e.value) == f"malformed database URL 'postgresql://u:***@h/db': {why}"

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://h/db?user=a@b",
            "postgresql://h:5432/db?passfile=/x/pgpass",
            "postgresql://u:a:b@h/db",
            "postgresql://u:a%40b%2Fc@h:5/db",
        ],
    )
    def test_well_formed_urls_pass(self, url: str) -> None:
        assert config.check_url(url) == url

    def test_sqlalchemy_url_uses_psycopg3(self) -> None:
        assert config.sqlalchemy_url("postgres://a@b/c") == "postgresql+psycopg://a@b/c"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("postgresql://user:s3cr%40t@host/db", "postgresql://user:***@host/db"),
            ("host=h password=s3cret dbname=x", "host=h password=*** dbname=x"),
            ("postgresql://user@host/db", "postgresql://user@host/db"),
        ],
    )
    def test_redact(self, text: str, expected: str) -> None:
        assert config.redact(text) == expected


class TestSettings:
    def test_defaults_come_from_the_project(self) -> None:
        s = config.settings()
        assert (s.schema, s.table, s.time_column, s.geometry_column, s.srid) == (
            "public",
            "geometrias",
            "data_referencia",
            "geom",
            4326,
        )
        assert s.qualified_table == "public.geometrias"

    def test_tool_stage4_table_overrides(self, tmp_path: Path) -> None:
        (tmp_path / "pyproject.toml").write_text('[tool.stage4]\ntable = "features"\nsrid = 3857\n')
        s = config.settings(tmp_path)
        assert (s.table, s.srid, s.root) == ("features", 3857, tmp_path)

    def test_unknown_key_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "pyproject.toml").write_text('[tool.stage4]\ntabel = "x"\n')
        with pytest.raises(ConfigError, match=r"unknown \[tool.stage4\] keys: tabel"):
            config.settings(tmp_path)

    def test_identifiers_are_validated(self, tmp_path: Path) -> None:
        (tmp_path / "pyproject.toml").write_text('[tool.stage4]\ntable = "x; drop table y"\n')
        with pytest.raises(ConfigError) as e:
            config.settings(tmp_path)
        assert str(e.value) == (
            "[tool.stage4] table = 'x; drop table y' is not a plain lower-case SQL identifier"
        )
