"""Which reader a file input needs, and reading it with one clear error when it does not parse.

The format follows the path (design.md, "CLI"): ``.csv``, ``.parquet``, ``.json`` / ``.jsonl``, each
optionally ``.gz`` (Spark decompresses gzip by extension; Parquet compresses inside the file, so
``.parquet.gz`` is refused); a folder holding ``_delta_log`` is Delta; any other folder (or glob)
takes the extension of its data files (Spark's ``part-00000-....snappy.parquet``, ``part-....csv.gz``).
An explicit format (``--format``, ``sources.internal.format``) wins over all of that.

:func:`resolve_format` is pure: it decides from a :class:`Listing` (what the path holds), which
:func:`local_listing` (plain ``os``, before Spark starts) or :func:`hadoop_listing` (any Hadoop URI)
builds. :func:`read` runs the reader and turns "not a Parquet file", "not JSON", an empty file and
friends into one :class:`InputError` line naming the path and what was expected.

Example::

    fmt = resolve_format("in/products.csv.gz", "auto", local_listing("in/products.csv.gz"))  # 'csv'
    df = read(spark, "in/products.csv.gz", fmt, "internal products", csv=lambda: my_csv_reader(path))
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..errors import InputError

#: File extension -> format (after an optional compression suffix is removed).
EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json", ".ndjson": "json"}
#: Compression suffixes Spark's text readers (CSV, JSON) undo by themselves.
COMPRESSION = (".gz",)
#: Formats whose files may carry a compression suffix.
TEXT_FORMATS = ("csv", "json")
#: What each format is, in words, for error messages.
EXPECTED = {
    "csv": "CSV text with a header row",
    "parquet": "a Parquet file",
    "json": "JSON lines (one object per line)",
    "delta": "a Delta table (a folder holding _delta_log)",
}
DELTA_LOG = "_delta_log"
CORRUPT = "_corrupt_record"
HINT = "name it .csv, .parquet, .json or .jsonl (optionally .gz) or pass --format (sources.internal.format)"


@dataclass(frozen=True)
class Listing:
    """What a path holds: whether it is a folder (or a glob), a Delta log, and its data files' names
    and sizes (Spark's hidden files, ``_*`` and ``.*``, left out)."""

    is_dir: bool
    delta_log: bool = False
    files: tuple[tuple[str, int], ...] = ()


def is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[{")


def format_of_name(name: str) -> str | None:
    """``products.csv.gz`` -> ``csv``; None for an unknown extension (and for ``.parquet.gz``)."""
    base = name.lower()
    compressed = base.endswith(COMPRESSION)
    if compressed:
        base = base[: base.rfind(".")]
    fmt = EXTENSIONS.get(os.path.splitext(base)[1])
    return None if fmt is None or (compressed and fmt not in TEXT_FORMATS) else fmt


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def resolve_format(path: str, override: str, listing: Listing, what: str = "input") -> str:
    """The format to read ``path`` with: ``override`` unless it is ``auto``, else from the path.

    Raises InputError naming the path when the format cannot be told or the folder mixes formats.

    >>> resolve_format("p.csv", "auto", Listing(is_dir=False, files=(("p.csv", 10),)))
    'csv'
    >>> resolve_format("t", "auto", Listing(is_dir=True, delta_log=True))
    'delta'
    """
    if override != "auto":
        return override
    if listing.delta_log:
        return "delta"
    if not listing.is_dir:
        fmt = format_of_name(path)
        if fmt is None:
            raise InputError(f"cannot tell the format of {what} path {path} from its name: {HINT}")
        return fmt
    data = [name for name, _ in listing.files if not _hidden(name)]
    found = {format_of_name(name) for name in data}
    if not data or found == {None}:
        raise InputError(f"{what} path {path} holds no data files (.csv, .parquet, .json, .jsonl, or a Delta _delta_log): "
                         f"point at the files, or pass --format")
    known = found - {None}
    if len(known) > 1:
        raise InputError(f"{what} path {path} mixes file formats ({', '.join(sorted(known))}): point at one of them, or pass --format")
    return known.pop()


def local_listing(path: str, what: str = "input") -> Listing | None:
    """The :class:`Listing` of a local path (``file:`` URIs included) without Spark; None when the
    path is a non-local URI. Raises InputError when nothing exists there."""
    if path.startswith("file:"):
        path = "/" + path[len("file:"):].lstrip("/")
    elif "://" in path:
        return None
    if is_glob(path):
        matches = sorted(glob.glob(path))
        if not matches:
            raise InputError(f"{what} path {path} matches no file: check the path (or the config key that sets it)")
        return Listing(is_dir=True, files=tuple((os.path.basename(m), _size(m)) for m in matches if os.path.isfile(m)))
    if not os.path.exists(path):
        raise InputError(f"{what} path {path} does not exist: check the path (or the config key that sets it)")
    if not os.path.isdir(path):
        return Listing(is_dir=False, files=((os.path.basename(path), _size(path)),))
    names = sorted(os.listdir(path))
    return Listing(is_dir=True, delta_log=DELTA_LOG in names,
                   files=tuple((n, _size(os.path.join(path, n))) for n in names
                               if os.path.isfile(os.path.join(path, n))))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def hadoop_listing(spark: SparkSession, path: str, what: str = "input") -> Listing:
    """The :class:`Listing` of any Hadoop path or glob, through the driver's FileSystem (metadata only)."""
    jvm = spark._jvm
    try:
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())
        found = fs.globStatus(hpath)
    except Exception as exc:  # bad URI scheme, missing credentials: say which path
        raise InputError(f"{what} path {path} cannot be opened: {_first_line(exc)}") from None
    if found is None or len(found) == 0:
        raise InputError(f"{what} path {path} does not exist: check the path (or the config key that sets it)")
    if len(found) == 1 and not is_glob(path):
        status = found[0]
        if not status.isDirectory():
            return Listing(is_dir=False, files=((status.getPath().getName(), int(status.getLen())),))
        children = fs.listStatus(status.getPath())
        return Listing(is_dir=True, delta_log=any(c.getPath().getName() == DELTA_LOG for c in children),
                       files=tuple((c.getPath().getName(), int(c.getLen())) for c in children if c.isFile()))
    return Listing(is_dir=True, files=tuple((s.getPath().getName(), int(s.getLen())) for s in found if s.isFile()))


def check_not_empty(path: str, fmt: str, listing: Listing, what: str = "input") -> None:
    """An input whose data files are all 0 bytes is refused (a header-only CSV is not: it has rows = 0,
    which the empty-input rule handles with its --allow-empty hint)."""
    if fmt == "delta":
        return
    sizes = [size for name, size in listing.files if not _hidden(name)]
    if sizes and all(size == 0 for size in sizes):
        raise InputError(f"{what} path {path} is empty (0 bytes): expected {EXPECTED[fmt]}")


def _first_line(exc: BaseException) -> str:
    """The message a user can act on: a Java exception's own message when Py4J wraps one."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            message = str(java.getMessage() or "")
        except Exception:  # noqa: BLE001 - the gateway may be gone
            message = ""
        if message.strip():
            return message.strip().splitlines()[0][:300]
    text = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return text[0][:300] if text else type(exc).__name__


#: Substrings of reader errors that mean "this is not <format>" (Spark 3.5 and 4.0 wordings).
NOT_THIS_FORMAT = ("not a Parquet file", "Could not read footer", "magic number", "CANNOT_READ_FILE_FOOTER",
                   "FAILED_READ_FILE", "is not a Delta table", "DELTA_MISSING_DELTA_TABLE", "MalformedInputException",
                   "UNABLE_TO_INFER_SCHEMA", "Unable to infer schema")


#: Spark reads a Parquet TIMESTAMP(NANOS) column (pandas' and pyarrow's default) only as its long count of
#: nanoseconds, under this flag; without it the read fails (PARQUET_TYPE_ILLEGAL). Set on the session.
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


def read_parquet(spark: SparkSession, path: str) -> DataFrame:
    """Parquet with its timestamps as timestamps in any unit: milli-, micro-seconds and INT96 Spark reads
    itself (with a time zone -> ``timestamp``, without -> ``timestamp_ntz``); nanoseconds arrive as longs
    (:data:`NANOS_AS_LONG`) and are turned back into timestamps of the same kind, truncated to the
    microsecond (Spark's precision). Which long columns were nanosecond timestamps is read from the
    footer of one data file (metadata only)."""
    spark.conf.set(NANOS_AS_LONG, "true")
    df = spark.read.parquet(path)
    longs = [f.name for f in df.schema.fields if isinstance(f.dataType, T.LongType)]
    if not longs:
        return df
    nanos = {name: utc for name, utc in _nanos_columns(spark, df).items() if name in longs}
    if not nanos:
        return df
    return df.withColumns({name: _from_nanos(name, utc) for name, utc in nanos.items()})


def _from_nanos(name: str, adjusted_to_utc: bool) -> Column:
    """Nanoseconds since the epoch -> timestamp (``adjusted_to_utc``) or timestamp_ntz, floored to the
    microsecond."""
    col = f"`{name}`"
    micros = f"(({col} - pmod({col}, 1000)) div 1000)"
    if adjusted_to_utc:
        return F.expr(f"timestamp_micros({micros})").alias(name)
    return F.expr(f"timestampadd(MICROSECOND, {micros}, TIMESTAMP_NTZ'1970-01-01 00:00:00')").alias(name)


def _nanos_columns(spark: SparkSession, df: DataFrame) -> dict[str, bool]:
    """Top-level TIMESTAMP(NANOS) columns of the frame's first data file -> isAdjustedToUTC."""
    jvm = getattr(spark, "_jvm", None)
    files = df.inputFiles()
    if jvm is None or not files:
        return {}
    conf = spark._jsc.hadoopConfiguration()
    reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(
        jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(jvm.org.apache.hadoop.fs.Path(sorted(files)[0]), conf))
    try:
        fields = reader.getFooter().getFileMetaData().getSchema().getFields()
    finally:
        reader.close()
    found = {}
    for field in fields:
        logical = str(field.getLogicalTypeAnnotation()) if field.isPrimitive() else ""
        if logical.startswith("TIMESTAMP(NANOS"):
            found[str(field.getName())] = logical.endswith("true)")
    return found


def read(spark: SparkSession, path: str, fmt: str, what: str, csv: Callable[[], DataFrame] | None = None) -> DataFrame:
    """Read ``path`` as ``fmt`` (``csv`` uses the caller's reader); raise one InputError line when the
    path does not parse as that format.

    The frame is what the format's reader gives: Parquet and Delta typed, JSON lines with every scalar
    as its text (``primitivesAsString``: amounts keep their digits) and ``_corrupt_record`` for lines
    that are not JSON, CSV per ``csv``.
    """
    readers: dict[str, Callable[[], DataFrame]] = {
        "parquet": lambda: read_parquet(spark, path),
        "json": lambda: spark.read.options(primitivesAsString="true", columnNameOfCorruptRecord=CORRUPT).json(path),
        "delta": lambda: spark.read.format("delta").load(path),
    }
    if csv is not None:
        readers["csv"] = csv
    if fmt not in readers:
        raise InputError(f"no reader for format {fmt!r} of {what} {path}")
    not_it = f"{what} path {path} does not parse as {fmt}: expected {EXPECTED.get(fmt, fmt)}"
    try:
        df = readers[fmt]()
    except InputError:
        raise
    except Exception as exc:
        text = str(exc)
        if any(marker in text for marker in NOT_THIS_FORMAT):
            raise InputError(f"{not_it} ({_first_line(exc)[:160]}); pass --format if the name misleads") from None
        raise
    columns = [c for c in df.columns if c != CORRUPT]
    if fmt == "json" and not columns:
        raise InputError(f"{not_it}; no line of it is a JSON object")
    if fmt == "csv" and any(not c.isprintable() for c in columns):
        raise InputError(f"{not_it}; its first line is not a text header")
    return df
