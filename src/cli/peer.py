# The DuckDB side of `crm-marts bench`: loads the exports and runs the pipeline's SQL models
# on DuckDB, as dbt-duckdb would (views stay views, tables and marts are tables, marts are
# written as Parquet), and prints one JSON line per stage: seconds, CPU seconds (all
# threads), rows and peak resident memory. The plan comes as JSON on stdin from crm-marts; nothing here knows the pipeline.
import json
import sys
import time

import duckdb


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def emit(**record):
    print(json.dumps(record), flush=True)


plan = json.load(sys.stdin)
con = duckdb.connect(plan["database"])
con.execute(f"SET threads = {int(plan['threads'])}")
con.execute(f"SET memory_limit = '{plan['memory_limit']}'")
con.execute(f"SET temp_directory = '{plan['temp_directory']}'")
con.execute("SET preserve_insertion_order = false")

for stage in plan["stages"]:
    reset_peak()
    started = time.perf_counter()
    cpu = time.process_time()
    rows = None
    error = None
    try:
        for statement in stage["statements"]:
            con.execute(statement)
        if stage.get("count"):
            rows = con.execute(f"SELECT count(*) FROM {stage['count']}").fetchone()[0]
    except duckdb.Error as e:
        error = str(e).splitlines()[0]
    emit(
        kind=stage["kind"],
        name=stage["name"],
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu,
        rows=rows,
        peak_rss_bytes=peak_rss(),
        error=error,
    )
