"""The line number of a malformed record (CSV or JSON lines), for its quarantine reason (``malformed_row: line 57``).

Spark's CSV reader knows no line numbers, and with ``multiLine`` (RFC 4180: quoted line breaks) a
record is not a line, so the number cannot come from the landing pass itself. It is found only on
the error path, after the pass has counted at least one ``malformed_row``: each file holding a
malformed record (CSV or JSON lines) is read once more as whole text (``wholetext``: one row per
file, so only files up to :data:`MAX_FILE_BYTES`), and a record's line is 1 + the line breaks before
the first occurrence of the record's first physical line in its file (``locate``), all in Spark SQL.
Two identical malformed records in one file both name the first one's line. A record whose file is
too large or gone keeps the bare reason ``malformed_row``; nothing else in the row changes.

Example::

    rejected = with_line_numbers(spark, rejected)   # reasons ['malformed_row'] -> ['malformed_row: line 3']
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

REASON = "malformed_row"
#: Files read whole to find a line: one JVM string per file, so bounded (larger: no line number).
MAX_FILE_BYTES = 128 * 1024 * 1024
#: At most this many files are searched (the distinct files of one landing's malformed records).
MAX_FILES = 100


def _file_len(spark: SparkSession, path: str) -> int | None:
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    try:
        fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
        return int(fs.getFileStatus(hpath).getLen())
    except Exception:  # noqa: BLE001 - a file gone since landing: no line number, not an error
        return None


def with_line_numbers(spark: SparkSession, rejected: DataFrame) -> DataFrame:
    """``rejected`` (gold.quarantine rows: ``reasons``, ``record``, ``source_file``) with each
    ``malformed_row`` reason of a CSV record extended by its line number where it can be found."""
    malformed = F.array_contains("reasons", REASON)
    # File names only (no row data), at most MAX_FILES of them: the files to search.
    files = rejected.where(malformed).select("source_file").distinct().limit(MAX_FILES)
    names = [r[0] for r in files.collect()]  # aggregate
    paths = [p for p in names if p and (_file_len(spark, p) or MAX_FILE_BYTES + 1) <= MAX_FILE_BYTES]
    if not paths:
        return rejected
    texts = (spark.read.text(paths, wholetext=True)
             .select(F.col("_metadata.file_path").alias("_file"), F.col("value").alias("_text")))
    first_line = "trim(TRAILING '\\r' FROM substring_index(record, '\\n', 1))"
    before = f"substring(_text, 1, locate({first_line}, _text, 1) - 1)"
    line = F.expr(f"length({before}) - length(replace({before}, '\\n', '')) + 1")
    found = F.expr(f"_text IS NOT NULL AND locate({first_line}, _text, 1) > 0 AND length({first_line}) > 0")
    reasons = F.transform("reasons", lambda r: F.when(
        (r == REASON) & found, F.concat(r, F.lit(": line "), line.cast("string"))).otherwise(r))
    cols = [reasons.alias(c) if c == "reasons" else F.col(f"q.{c}") for c in rejected.columns]
    return (rejected.alias("q")
            .join(texts.alias("t"), (F.col("q.source_file") == F.col("t._file")) & malformed, "left")
            .select(*cols))
