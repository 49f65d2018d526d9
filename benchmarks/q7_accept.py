"""Q7 (features within r metres): is a cheap, exact pre-test worth it? (It was not.)

Q7's cost at 1M features is ``ST_DWithin(geom::geography, pt::geography, r)`` for every
candidate of the box: ~1.6 µs for a point, ~7 µs for a line or polygon. A feature whose
bbox is small (≤ 0.01°) and that lies within ``r / 117,280`` degrees of the point in
plain lon/lat is within ``r`` metres on the spheroid for sure (one degree is at most
111,695 m, a 5 % margin covers the sphere/spheroid gap PostGIS's closest-point search
leaves and the bulge of short great-circle edges), so ``(that test) OR ST_DWithin(…)``
returns the same rows while skipping most geography calls. This script compares both
forms (same rows asserted) on 8 anchors × 4 radii, median of 5 alternating runs each.

At 1M features (opt5's tile view, fifth session): on the densest set (1 km, 37k rows)
the filter alone went from 238 to 136 ms (the WHERE clauses below in a ``count(*)``,
psql), but end to end the sets ran ×0.91–×1.27 faster (median ×1.06): fetching, sorting
and sending the rows cost as much as the test saved, and the bound needs care (edge
length, pole, tiny radii). Not adopted. Needs a cluster at opt5:

    STAGE4_HOME=/tmp/scale-1m PYTHONPATH=src .venv/bin/python benchmarks/q7_accept.py
"""

from __future__ import annotations

import statistics
import time

PT = "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)"
BOX = (f"ST_Expand({PT}, %(r)s / (110000.0 * cos(radians(least(89.0, abs(%(lat)s) + "
       "%(r)s / 110000.0)))), %(r)s / 110000.0)")  # fmt: skip
BASE = (f"SELECT id, nome, categoria FROM geometrias_tile_mv WHERE geom && {BOX} "
        f"AND ST_DWithin(geom::geography, {PT}::geography, %(r)s) ORDER BY id")  # fmt: skip
ACCEPT = ("(ST_XMax(geom) - ST_XMin(geom) + ST_YMax(geom) - ST_YMin(geom) <= 0.01 "
          f"AND ST_DWithin(geom, {PT}, %(r)s / 117280.0))")  # fmt: skip
VARIANT = (f"SELECT id, nome, categoria FROM geometrias_tile_mv WHERE geom && {BOX} "
           f"AND ({ACCEPT} OR ST_DWithin(geom::geography, {PT}::geography, %(r)s)) ORDER BY id")  # fmt: skip


def main() -> None:
    from stage4.cluster import Cluster
    from stage4.config import settings
    from stage4.db import connect

    with connect(Cluster.from_settings(settings()).url(), autocommit=True) as c:
        anchors = c.execute(
            "SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) "
            "FROM geometrias_tile_mv ORDER BY hashint8(id) LIMIT 8"
        ).fetchall()
        for lon, lat in anchors:
            for r in (100, 250, 500, 1000):
                p = {"lon": lon, "lat": lat, "r": r}
                rows = c.execute(BASE, p).fetchall()
                assert rows == c.execute(VARIANT, p).fetchall(), (lon, lat, r)
                ta, tb = [], []
                for _ in range(5):
                    for sql, out in ((BASE, ta), (VARIANT, tb)):
                        t0 = time.perf_counter()
                        c.execute(sql, p).fetchall()
                        out.append((time.perf_counter() - t0) * 1000)
                a, b = statistics.median(ta), statistics.median(tb)
                print(f"{lon:.3f} {lat:.3f} r={r:5d} rows={len(rows):6d} "
                      f"app {a:8.2f} ms  with pre-test {b:8.2f} ms  ×{a / b:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
