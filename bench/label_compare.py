#!/usr/bin/env python3
"""Compare psla's and DuckDB's label-enhancement outputs (not timed).

    label_compare.py PSLA_OUT.parquet DUCKDB_OUT.parquet

Prints one JSON line: rows of each, rows of (clip_id, mid, origin, via_mid) in one and not the
other (both ways), and the largest threshold difference between OUT.thresholds.parquet files.
"""

import json
import sys

import duckdb


def q(p):
    return "'" + p.replace("'", "''") + "'"


def main():
    a, b = sys.argv[1], sys.argv[2]
    ta, tb = (p[: -len(".parquet")] + ".thresholds.parquet" for p in (a, b))
    con = duckdb.connect()
    con.execute("SET threads = 2")
    cols = "clip_id, mid, origin, via_mid"
    one = lambda s: con.execute(s).fetchone()[0]
    result = {
        "psla_rows": one(f"SELECT COUNT(*) FROM read_parquet({q(a)})"),
        "duckdb_rows": one(f"SELECT COUNT(*) FROM read_parquet({q(b)})"),
        "only_psla": one(f"SELECT COUNT(*) FROM (SELECT {cols} FROM read_parquet({q(a)}) EXCEPT ALL SELECT {cols} FROM read_parquet({q(b)}))"),
        "only_duckdb": one(f"SELECT COUNT(*) FROM (SELECT {cols} FROM read_parquet({q(b)}) EXCEPT ALL SELECT {cols} FROM read_parquet({q(a)}))"),
        "threshold_max_abs_diff": one(f"""SELECT MAX(ABS(x.threshold - y.threshold)) FROM read_parquet({q(ta)}) x
                                         JOIN read_parquet({q(tb)}) y USING (mid)"""),
        "thresholds": [one(f"SELECT COUNT(*) FROM read_parquet({q(ta)})"), one(f"SELECT COUNT(*) FROM read_parquet({q(tb)})")],
    }
    result["equal"] = (result["only_psla"] == 0 and result["only_duckdb"] == 0
                       and result["psla_rows"] == result["duckdb_rows"] and result["threshold_max_abs_diff"] == 0
                       and result["thresholds"][0] == result["thresholds"][1])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
