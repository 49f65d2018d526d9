"""Workload files only read: the loader refuses a file that could write (a real lexer finds
where statements end), every session that runs them is read-only, and a file refused or
failed is named with its reason, never left out silently."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import pytest

from stage4 import cli
from stage4.errors import ConfigError, Stage4Error
from stage4.measure import bench, sqltext, throughput, workload

FAST = {"iterations": 1, "concurrency": 1, "duration": 1}
INSERT = "INSERT INTO geometrias (nome, categoria, data_referencia, geom) VALUES " \
         "('x', 'escola', '2024-01-01', 'SRID=4326;POINT(0 0)')"  # fmt: skip
# A file that could write, and why it is refused.
WRITERS = {
    "dash": (f"SELECT '--'; {INSERT};", "holds more than one statement"),
    "dollar": (f"SELECT $$--$$; {INSERT};", "holds more than one statement"),
    "tagged": ("SELECT $t$ ; $$ $t$; DROP TABLE geometrias;", "holds more than one statement"),
    "returning": (f"{INSERT} RETURNING id;", "INSERT is not a read"),
    "with_insert": (f"WITH n AS ({INSERT} RETURNING id) SELECT * FROM n;", "INSERT INTO writes"),
    "with_update": (
        "WITH n AS (UPDATE geometrias SET nome = 'y' RETURNING id) SELECT 1;",
        "UPDATE … SET writes",
    ),
    "with_delete": (
        "WITH n AS (DELETE FROM geometrias RETURNING id) SELECT 1;",
        "DELETE FROM writes",
    ),
    "drop": ("DROP TABLE geometrias;", "DROP is not a read"),
    "select_into": ("SELECT * INTO copia FROM geometrias;", "SELECT … INTO creates a table"),
    "gset": ("SELECT count(*) AS n FROM geometrias \\gset", "\\gset is a meta-command"),
    "set_config": (
        "SELECT set_config('default_transaction_read_only', 'off', false);",
        "set_config() changes the session's settings",
    ),
    "unterminated": ("SELECT 'abc;", "unterminated quoted string"),
}


def _rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM public.geometrias").fetchone()[0]


def _cli(monkeypatch, capsys, url: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["stage4", "--database-url", url, *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    got = capsys.readouterr()
    return e.value.code, got.out, got.err


class TestLexer:
    def test_semicolons_and_dashes_inside_text_are_text(self) -> None:
        sql = "SELECT ';', $$--;$$, $a$ $$ ; $a$, E'\\';', \"a;b\", /* ; /* ; */ */ 1 -- ;\n; x"
        toks = sqltext.tokens(sql)
        assert "".join(t.text for t in toks) == sql
        stmts = sqltext.statements(toks)
        assert len(stmts) == 2 and [t.text for t in sqltext.code(stmts[1])] == ["x"]
        assert [t.kind for t in sqltext.code(stmts[0])].count("string") == 4

    @pytest.mark.parametrize("sql", ["SELECT 'a", "SELECT $x$ a", "SELECT /* a", 'SELECT "a'])
    def test_unterminated_text_is_an_error(self, sql: str) -> None:
        with pytest.raises(sqltext.LexError, match="unterminated"):
            sqltext.tokens(sql)


class TestRefusedFiles:
    @pytest.mark.parametrize("name", sorted(WRITERS))
    def test_a_file_that_could_write_is_refused_with_its_reason(self, tmp_path, name) -> None:
        text, reason = WRITERS[name]
        (tmp_path / f"{name}.sql").write_text(text)
        with pytest.raises(ConfigError) as e:
            workload.load_dir(tmp_path)
        assert str(e.value).startswith(f"{tmp_path / name}.sql: ") and reason in str(e.value)

    def test_reads_pass_and_variables_are_bound_only_in_code(self, tmp_path) -> None:
        (tmp_path / "r.sql").write_text(
            "\\set n random(1, 9)\n(SELECT id, ':n' AS t, \":n\" FROM geometrias -- :n ;\n"
            "WHERE id = :n AND id::bigint > 0 FOR SHARE);\n"
        )
        (q,) = workload.load_dir(tmp_path).values()
        assert "id = %(n)s" in q.sql and "':n'" in q.sql and '":n"' in q.sql
        assert "-- :n ;" in q.sql and "::bigint" in q.sql

    def test_every_refused_file_of_the_folder_is_named(
        self, seeded_url: str, tmp_path, monkeypatch, capsys
    ) -> None:
        for name, (text, _) in WRITERS.items():
            (tmp_path / f"{name}.sql").write_text(text)
        (tmp_path / "fine.sql").write_text("SELECT count(*) FROM geometrias;")
        before = _rows(seeded_url)
        code, out, err = _cli(monkeypatch, capsys, seeded_url, "bench", "--workload",
                              str(tmp_path), "--iterations", "1", "--duration", "1")  # fmt: skip
        assert code == 2 and "Traceback" not in err + out
        (line,) = [ln for ln in err.splitlines() if ln.startswith("FAILED: ")]
        assert f"{len(WRITERS)} of {len(WRITERS) + 1} workload files refused" in line
        for name, (_, reason) in WRITERS.items():
            assert f"{tmp_path / name}.sql: {reason}" in line, name
        assert "fine.sql" not in line
        assert _rows(seeded_url) == before  # the table is there and nothing was written


class TestReadOnlySessions:
    @pytest.mark.slow
    def test_a_write_hidden_in_a_function_fails_named_and_writes_nothing(
        self, seeded_url: str, tmp_path, monkeypatch, capsys
    ) -> None:
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            conn.execute(f"CREATE FUNCTION public.sneaky() RETURNS bigint LANGUAGE sql AS "
                         f"$$ {INSERT} RETURNING id $$")  # fmt: skip
            conn.execute(
                "CREATE FUNCTION public.unlock() RETURNS text LANGUAGE sql AS "
                "$$ SELECT set_config('default_transaction_read_only', 'off', false) $$"
            )
            seq = conn.execute("SELECT last_value FROM public.geometrias_id_seq").fetchone()[0]
        (tmp_path / "a_sneaky.sql").write_text("SELECT public.sneaky();")
        (tmp_path / "b_unlock.sql").write_text("SELECT public.unlock();")
        (tmp_path / "c_nextval.sql").write_text("SELECT nextval('public.geometrias_id_seq');")
        (tmp_path / "d_fine.sql").write_text("SELECT count(*) FROM geometrias;")
        before = _rows(seeded_url)
        code, out, _ = _cli(monkeypatch, capsys, seeded_url, "bench", "--workload",
                            str(tmp_path), "--iterations", "1", "--duration", "1")  # fmt: skip
        assert code == 0
        said = {
            ln.split(": ", 2)[1]: ln for ln in out.splitlines() if ln.startswith("not measured")
        }
        assert set(said) == {str(tmp_path / f) for f in ("a_sneaky.sql", "b_unlock.sql",
                                                         "c_nextval.sql")}  # fmt: skip
        assert (
            "cannot execute INSERT in a read-only transaction"
            in said[str(tmp_path / "a_sneaky.sql")]
        )
        assert "turned default_transaction_read_only off" in said[str(tmp_path / "b_unlock.sql")]
        assert "read-only transaction" in said[str(tmp_path / "c_nextval.sql")]
        assert "d_fine" in out
        assert _rows(seeded_url) == before
        with psycopg.connect(seeded_url) as conn:
            assert (
                conn.execute("SELECT last_value FROM public.geometrias_id_seq").fetchone()[0] == seq
            )

    def test_the_throughput_sessions_are_read_only(self, seeded_url: str) -> None:
        """pgbench (and the threads fallback) refuse a write: the run fails, nothing written."""
        before = _rows(seeded_url)
        with pytest.raises(Stage4Error, match="read-only transaction"):
            throughput.measure(seeded_url, [INSERT], 1, 1.0, 42, lambda *_: None)
        with pytest.raises(Stage4Error, match="read-only transaction"):
            throughput.threads(seeded_url, [INSERT], 2, 0.3, 1)
        assert _rows(seeded_url) == before

    @pytest.mark.slow
    def test_the_url_options_are_kept_beside_read_only(self, seeded_url: str) -> None:
        sep = "&" if "?" in seeded_url else "?"
        url = f"{seeded_url}{sep}options=-c%20search_path%3Dnowhere"
        # divides by zero unless the session has both the URL's option and read-only
        both = ("SELECT 1 / (current_setting('search_path') = 'nowhere' "
                "AND current_setting('transaction_read_only') = 'on')::int")  # fmt: skip
        qps, tool = throughput.measure(url, [both], 1, 1.0, 42, lambda *_: None)
        assert tool.startswith("pgbench") and qps > 0
        assert throughput.threads(url, [both], 1, 0.3, 1) > 0

    @pytest.mark.slow
    def test_a_bench_run_records_the_failed_file(self, seeded_url: str, tmp_path: Path) -> None:
        (tmp_path / "locks.sql").write_text("SELECT id FROM geometrias WHERE id = 1 FOR UPDATE;")
        run = bench.run(seeded_url, label="ro", workload_dir=tmp_path, save=False, **FAST)
        err = run.environment["errors"]["locks"]
        assert err["file"] == str(tmp_path / "locks.sql")
        assert err["error"] == "cannot execute SELECT FOR UPDATE in a read-only transaction"


def test_upgrade_refuses_a_writing_file_at_pre_flight(seeded_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stage4.plumbing import migrations

    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "dash.sql").write_text(WRITERS["dash"][0])
    (folder / "fine.sql").write_text("SELECT count(*) FROM geometrias;")
    args = ["--database-url", seeded_url, "upgrade", "--to", "opt1", "--workload", str(folder),
            "--reports-dir", str(tmp_path / "reports"), "--backup-dir", str(tmp_path / "b")]  # fmt: skip
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 1, (res.stdout, res.stderr)
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("FAILED: ")]
    assert line == (
        "FAILED: pre-flight refused (nothing was changed): workload files: "
        f"{folder / 'dash.sql'}: holds more than one statement (one per file)"
    )
    assert migrations.current(seeded_url) == "schema"
    assert not (tmp_path / "b").exists() and not (tmp_path / "reports").exists()
