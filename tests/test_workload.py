"""The Q1–Q10 catalogue: parameters drawn from the data, rows on the seeded DB, fingerprints."""

from __future__ import annotations

import psycopg
import pytest

from stage4.config import settings
from stage4.ddl import functions
from stage4.measure import workload
from stage4.measure.workload import Rewrite

QIDS = [f"Q{i}" for i in range(1, 11)]
REST = ["R1", "R2", "R3"]


@pytest.fixture
def conn(seeded_url: str):
    with psycopg.connect(seeded_url, autocommit=True) as c:
        yield c


class TestCatalogue:
    def test_ten_queries_in_order_each_an_rpc(self) -> None:
        s = settings()
        qs = workload.queries(s)
        assert list(qs) == [*QIDS, *REST]
        assert all(qs[q].rpc for q in QIDS)
        assert "pgrst_source" in qs["R1"].sql and "t.id = %(id)s" in qs["R1"].sql
        assert "buscar_geometrias(" in qs["Q4"].sql
        assert "contagem_mensal(" in qs["Q8"].sql
        assert "tile_mvt(" in qs["Q10"].sql
        assert "mais_proximas(" in qs["Q6"].sql and "dentro_do_raio(" in qs["Q7"].sql
        # each read's body is the app's query as it sent it, its arguments in place
        bodies = {q: functions.read(s, q).body for q in functions.read_ids()}
        assert "<->" in bodies["Q6"] and "ST_DWithin" in bodies["Q7"]
        assert not any("%(" in b for b in bodies.values())

    def test_every_query_returns_rows_on_the_seeded_database(self, conn) -> None:
        s = settings()
        anchors = workload.sample_anchors(conn, s)
        assert len(anchors.features) == workload.ANCHORS and anchors.containment
        for qid, q in workload.queries(s).items():
            for stream in ("bench", "fp"):
                for p in workload.parameters(qid, anchors, 4, stream=stream):
                    rows = conn.execute(q.sql, p).fetchall()
                    assert rows, f"{qid} {p} returned no rows"
                    if qid == "Q1":
                        assert rows[0][0] > 0, f"Q1 {p} counted nothing"
                    if qid == "Q10":
                        assert rows[0][0], f"Q10 {p} returned an empty tile"

    def test_parameters_replay_the_same_sequence(self, conn) -> None:
        s = settings()
        a1, a2 = workload.sample_anchors(conn, s), workload.sample_anchors(conn, s)
        assert a1 == a2
        seq = {q: workload.parameters(q, a1, 5) for q in QIDS}
        assert seq == {q: workload.parameters(q, a2, 5) for q in QIDS}
        assert workload.params_digest(seq) == workload.params_digest(
            {q: workload.parameters(q, a2, 5) for q in QIDS}
        )
        assert workload.parameters("Q1", a1, 5, seed=7) != seq["Q1"]

    def test_anchors_do_not_depend_on_physical_order(self, conn) -> None:
        s = settings()
        before = workload.sample_anchors(conn, s)
        conn.execute(f"CLUSTER {s.qualified_table} USING {s.table}_categoria_idx")
        assert workload.sample_anchors(conn, s) == before


class TestFingerprint:
    def test_floats_are_compared_to_nine_significant_digits(self) -> None:
        assert workload.normalise_rows([(1, 0.1 + 0.2)]) == workload.normalise_rows([(1, 0.3)])
        assert workload.normalise_rows([(1, 0.3001)]) != workload.normalise_rows([(1, 0.3)])

    def test_order_counts_unless_the_query_is_unordered(self) -> None:
        a, b = workload.Fingerprint(), workload.Fingerprint()
        a.add([(1,), (2,)])
        b.add([(2,), (1,)])
        assert a.hexdigest() != b.hexdigest()
        c, d = workload.Fingerprint(), workload.Fingerprint()
        c.add([(1,), (2,)], ordered=False)
        d.add([(2,), (1,)], ordered=False)
        assert c.hexdigest() == d.hexdigest()

    def test_bytes_and_dates_are_hashed_stably(self) -> None:
        import datetime as dt

        rows = [(b"\x00\x01", dt.date(2024, 1, 1), None, "x")]
        assert workload.normalise_rows(rows) == workload.normalise_rows(list(rows))


class TestRewrites:
    def test_the_contract_makes_each_query_an_rpc(self) -> None:
        assert list(workload.CONTRACT) == [*QIDS, *REST]
        assert {workload.CONTRACT[q] for q in QIDS} == {"RPC"}
        assert {workload.CONTRACT[q] for q in REST} == {"PostgREST, prepared"}
        qs = workload.queries(settings())
        assert all(qs[q].rpc for q in QIDS) and all(qs[q].prepared for q in REST)

    def test_a_rewrite_is_offered_only_when_requires_holds(self, conn) -> None:
        s = settings()
        alt = Rewrite(
            requires="true", sql=workload.base_sql(s)["Q3"].replace(" ORDER BY categoria", "")
        )
        off = Rewrite(requires="to_regclass('public.no_such_view') IS NOT NULL", sql="SELECT 1")
        gone = Rewrite(requires="(SELECT n FROM public.no_such_view) > 0", sql="SELECT 1")
        found = workload.available(conn, {"Q3": {"alt": alt}, "Q1": {"off": off, "gone": gone}})
        assert found == {"Q3": {"alt": alt.sql}}  # at schema no registered rewrite holds

    def test_the_registry_offers_only_what_no_revision_re_points(self) -> None:
        found = workload.registry()
        # Q1 and Q3 are re-pointed by opt2 (fresh); the views' SQL stays an offer (stale)
        assert set(found) == {"Q2", "Q6", "Q7", "Q9", "Q10"}
        assert all(rewrites.keys() == {"aggregates"} for rewrites in found.values())
        assert all(isinstance(x, Rewrite) for r in found.values() for x in r.values())

    def test_refresh_materialized_views_of_the_app_schema(self, conn) -> None:
        s = settings()
        conn.execute(f"CREATE MATERIALIZED VIEW {s.schema}.mv_t AS "
                     f"SELECT count(*) AS n FROM {s.qualified_table} WITH NO DATA")  # fmt: skip
        assert workload.refresh_materialized_views(conn, s) == [f"{s.schema}.mv_t"]
        assert conn.execute(f"SELECT n FROM {s.schema}.mv_t").fetchone()[0] == 2000
        vacuumed = conn.execute(
            "SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL "
            "FROM pg_stat_all_tables WHERE relid = %s::regclass",
            (f"{s.schema}.mv_t",),
        ).fetchone()[0]
        assert vacuumed  # a plain REFRESH leaves no visibility map: index-only scans need it


class TestWorkloadFiles:
    """The app's own queries: pgbench custom scripts, one statement each."""

    def _dir(self, tmp_path, **files: str):
        for name, text in files.items():
            (tmp_path / f"{name}.sql").write_text(text)
        return tmp_path

    def test_set_lines_become_seeded_parameters(self, tmp_path) -> None:
        folder = self._dir(tmp_path, recentes="-- the app's list\n\\set ano random(2020, 2024)\n"
                           "\\set n 20\nSELECT id FROM geometrias WHERE data_referencia >= "
                           "make_date(:ano, 1, 1) AND nome LIKE 'E%' AND id::text <> '1:2'\n"
                           "ORDER BY id LIMIT :n;\n")  # fmt: skip
        [q] = workload.load_dir(folder).values()
        assert (q.qid, q.title, q.source, q.ordered) == ("recentes", "recentes.sql",
                                                         str(folder / "recentes.sql"), True)  # fmt: skip
        assert "make_date(%(ano)s, 1, 1)" in q.sql and "LIMIT %(n)s" in q.sql
        assert "LIKE 'E%%'" in q.sql and "id::text <> '1:2'" in q.sql
        an = workload.Anchors((workload.Anchor(1, "a", "POINT", 0.0, 0.0, None, ""),), ())
        drawn = workload.parameters(q.qid, an, 50, gen=q.params)
        assert drawn == workload.parameters(q.qid, an, 50, gen=q.params)  # replayable
        assert {p["n"] for p in drawn} == {20}
        assert {p["ano"] for p in drawn} == {2020, 2021, 2022, 2023, 2024}  # both ends included

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("\\set x random(1)\nSELECT :x", r"a.sql:1: only `\\set name random\(a, b\)`"),
            ("\\sleep 10 ms\nSELECT 1", r"a.sql:1: only `\\set name random\(a, b\)`"),
            ("\\set x random(5, 1)\nSELECT :x", r"a.sql:1: random\(5, 1\) is an empty range"),
            ("SELECT 1; SELECT 2;", r"a.sql: holds more than one statement \(one per file\)"),
            ("-- nothing\n", r"a.sql: holds no SQL statement"),
            ("SELECT :y + :x", r"a.sql: :x, :y used but never set"),
        ],
    )
    def test_bad_files_are_refused_naming_file_and_line(self, tmp_path, text, message) -> None:
        from stage4.errors import ConfigError

        with pytest.raises(ConfigError, match=message):
            workload.load_dir(self._dir(tmp_path, a=text))

    def test_a_folder_without_files_or_with_a_builtin_name_is_refused(self, tmp_path) -> None:
        from stage4.errors import ConfigError

        with pytest.raises(ConfigError, match=r"holds no \*\.sql file"):
            workload.load_dir(tmp_path)
        with pytest.raises(ConfigError, match="does not exist"):
            workload.load_dir(tmp_path / "nope")
        with pytest.raises(ConfigError, match="Q1 is a name of the built-in workload"):
            workload.load_dir(self._dir(tmp_path, Q1="SELECT 1"))


def test_require_measured_names_the_file_not_measured_or_failed(tmp_path) -> None:
    from stage4.errors import ConfigError
    from stage4.measure.metrics import BenchRun

    (tmp_path / "recent.sql").write_text("SELECT 1;\n")
    source = tmp_path / "recent.sql"

    def run(**kw) -> BenchRun:
        return BenchRun(label="RUN", fingerprints={}, variants={}, **kw)

    workload.require_measured(run(samples={"recent": [1.0]}), tmp_path, "run 1")  # measured
    with pytest.raises(ConfigError) as missing:
        workload.require_measured(run(samples={}), tmp_path, "run 2")
    assert str(missing.value) == f"run 2 did not measure {source}: bench with --workload {tmp_path}"
    failed = run(samples={}, environment={"errors": {"recent": {"error": "boom"}}})
    with pytest.raises(ConfigError) as broke:
        workload.require_measured(failed, tmp_path, "run 3")
    assert str(broke.value) == f"run 3: {source} failed: boom"
