"""Typed configuration: conf/base.yaml + an environment file + RECON_* variables + --set overrides.

Precedence (later wins): base.yaml, the ``--config`` file (default conf/local.yaml), RECON_*
environment variables, ``--set a.b=c``. Every section forbids unknown keys, so a typo fails at start
with the key's full path and the keys that are allowed there.

Example::

    cfg = load_config("conf/local.yaml", overrides=["storage.root=/tmp/run1"])
    cfg.storage.root  # '/tmp/run1'
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

Owner = Literal["internal", "stripe", "bidirectional", "ignore"]
Normaliser = Literal["trim", "nfc", "lower", "collapse_spaces"]
Comparator = Literal["exact", "case_insensitive", "numeric", "set", "map"]

REPO_CONF = Path(__file__).resolve().parents[2] / "conf"
ENV_PREFIX = "RECON_"
# RECON_* variables that are not configuration keys (secrets and tool settings).
ENV_NOT_CONFIG = {"RECON_JDBC_PASSWORD", "RECON_CONFIG", "RECON_HOME"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Storage(Section):
    root: str = "./data"


class SparkConf(Section):
    master: str = "local[2]"
    app_name: str = "stripe-recon"
    shuffle_partitions: int = Field(8, ge=1)
    ui_enabled: bool = False
    driver_memory: str = "4g"
    ivy_dir: str = "./.cache/ivy"
    class_archive: bool = True
    log_file: str | None = None
    extra_packages: list[str] = Field(default_factory=list)
    conf: dict[str, Any] = Field(default_factory=dict)


class JdbcSource(Section):
    url: str | None = None
    user: str | None = None
    password_env: str = "RECON_JDBC_PASSWORD"
    products_table: str = "products"
    prices_table: str = "prices"
    driver: str = "org.postgresql.Driver"
    partition_column: str | None = None
    lower_bound: int | None = None
    upper_bound: int | None = None
    num_partitions: int | None = Field(None, ge=1)
    fetch_size: int = Field(10000, ge=1)


class KafkaSource(Section):
    """Debezium's topic(s) for ``land internal --kafka`` (land/cdc_ingest.py)."""

    servers: str | None = None  # bootstrap servers, host:port[,host:port]
    topic: str | None = None  # one topic, or several comma-separated
    starting_offsets: Literal["earliest", "latest"] = "earliest"  # where a new checkpoint starts
    max_offsets_per_trigger: int | None = Field(None, ge=1)  # records per micro-batch (None: all)
    options: dict[str, str] = Field(default_factory=dict)  # more kafka.* consumer options (security)


class CdcSource(Section):
    """Debezium change events (``land internal --cdc PATH`` or ``--kafka``)."""

    tables: dict[str, str] = Field(default_factory=lambda: {"products": "products", "prices": "prices"})
    path: str | None = None  # JSON-lines files of events (file, folder or glob)
    epoch_unit: Literal["micros", "millis", "seconds"] = "micros"  # integer timestamps without a schema
    kafka: KafkaSource = Field(default_factory=KafkaSource)


class InternalSource(Section):
    # auto: from the path (land/formats.py: .csv, .parquet, .json/.jsonl, optionally .gz; _delta_log = delta)
    format: Literal["auto", "parquet", "csv", "json", "delta", "jdbc"] = "auto"
    products: str | None = None
    prices: str | None = None
    allow_empty: bool = False
    jdbc: JdbcSource = Field(default_factory=JdbcSource)
    cdc: CdcSource = Field(default_factory=CdcSource)


class StripeSource(Section):
    mode: Literal["files", "api", "events"] = "files"  # events: /v1/events since the last landing (changes)
    path: str | None = None
    format: Literal["auto", "jsonl", "airbyte"] = "auto"
    allow_empty: bool = False
    events_retention_days: int = Field(30, ge=1)  # Stripe keeps /v1/events this long (land/stripe_events.py)


class Sources(Section):
    internal: InternalSource = Field(default_factory=InternalSource)
    stripe: StripeSource = Field(default_factory=StripeSource)


class StripeConf(Section):
    api_base: str | None = None
    api_version: str = "2026-10-28"
    key_source: Literal["env", "aws_secrets_manager", "databricks"] = "env"
    key_env: str = "STRIPE_API_KEY"
    aws_secret_id: str | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    databricks_scope: str | None = None
    databricks_key: str | None = None
    timeout_seconds: float = Field(30, gt=0)
    rate_limit_per_second: float = Field(20, gt=0)
    threads: int = Field(8, ge=1, le=64)
    max_attempts: int = Field(6, ge=1)
    export_windows: int = Field(8, ge=1)
    status_chunk_size: int = Field(500, ge=1)


class EmulatorConf(Section):
    host: str = "127.0.0.1"
    port: int = 12111


class Mapping(Section):
    product_key: Literal["metadata.internal_id", "id"] = "metadata.internal_id"
    price_key: Literal["lookup_key", "id"] = "lookup_key"


class Attribute(Section):
    internal: str
    stripe: str
    owner: Owner = "internal"
    normalise: list[Normaliser] = Field(default_factory=list)
    compare: Comparator = "exact"
    null_equals_empty: bool = False
    resolve: Literal["latest_wins", "review"] = "review"
    tolerance: float = Field(0.0, ge=0)


class Attributes(Section):
    product: dict[str, Attribute] = Field(default_factory=dict)
    price: dict[str, Attribute] = Field(default_factory=dict)


class MetadataConf(Section):
    excluded_keys: list[str] = Field(default_factory=lambda: ["internal_id"])
    owners: dict[str, Literal["internal", "stripe", "ignore"]] = Field(default_factory=dict)


class DetectConf(Section):
    missing_in_internal_action: Literal["review", "archive"] = "review"
    broadcast_max_rows: int = Field(2_000_000, ge=0)
    #: A detect over the very silver versions the last detect read (same configuration) keeps that
    #: run's rows instead of comparing again (they are a function of those versions), and a plan
    #: builds on the last plan: its corrections restamped over the same versions, else only the keys
    #: the change feed names since planned again and the rest carried; false: compare and plan all.
    reuse_unchanged: bool = True


class LandConf(Section):
    #: A re-landing whose silver tables hold at most this many rows each keeps its typed records in
    #: memory for its passes and MERGEs silver from memory (no scratch table); larger ones stream.
    memory_max_rows: int = Field(200_000, ge=0)


class Guard(Section):
    max_change_ratio: float = Field(0.05, ge=0, le=1)
    max_archive_ratio: float = Field(0.01, ge=0, le=1)
    max_shrink_ratio: float = Field(0.10, ge=0, le=1)


class LeaseConf(Section):
    """The storage root's writer lease (lease.py) and the pusher's claims (claims.py)."""

    heartbeat_seconds: float = Field(10, gt=0)
    timeout_seconds: float = Field(120, gt=0)

    @model_validator(mode="after")
    def _timeout_spans_heartbeats(self) -> LeaseConf:
        if self.timeout_seconds < 4 * self.heartbeat_seconds:
            raise ValueError(f"lease.timeout_seconds ({self.timeout_seconds:g}) must be at least 4 x "
                             f"lease.heartbeat_seconds ({self.heartbeat_seconds:g})")
        return self


class ValidationConf(Section):
    enabled: bool = True
    row_count_band: float = Field(0.5, ge=0)
    data_docs: bool = True


class GlueDeploy(Section):
    """Where ``recon deploy glue`` puts the job (see README "Deployment")."""

    job_name: str = "stripe-recon"
    role_arn: str | None = None          # IAM role the job runs as (README lists its permissions)
    s3_prefix: str | None = None         # s3://bucket/path: the wheel, the script and temp files go here
    region: str | None = None
    endpoint_url: str | None = None      # for tests (moto server)
    worker_type: str = "G.1X"
    number_of_workers: int = Field(2, ge=2)
    timeout_minutes: int = Field(120, ge=1)
    max_retries: int = Field(0, ge=0)
    command: str = "run"                 # the recon command the job runs (e.g. "run --dry-run")
    config: str = "glue.yaml"            # a packaged conf name or an s3:// / local YAML path
    overrides: list[str] = Field(default_factory=list)   # --set pairs passed to every run
    additional_python_modules: list[str] = Field(default_factory=list)  # beyond the uploaded wheel
    schedule: str | None = None          # Glue cron, e.g. "cron(0 3 * * ? *)": creates/updates a trigger


class ConsoleConf(Section):
    """What ``recon`` prints while it works (console.py)."""

    plain_progress_seconds: float = Field(60.0, ge=0)  # not on a terminal: a progress line this often (0 = none)


class DeployConf(Section):
    glue: GlueDeploy = Field(default_factory=GlueDeploy)


class Config(Section):
    storage: Storage = Field(default_factory=Storage)
    spark: SparkConf = Field(default_factory=SparkConf)
    sources: Sources = Field(default_factory=Sources)
    stripe: StripeConf = Field(default_factory=StripeConf)
    emulator: EmulatorConf = Field(default_factory=EmulatorConf)
    mapping: Mapping = Field(default_factory=Mapping)
    attributes: Attributes = Field(default_factory=Attributes)
    metadata: MetadataConf = Field(default_factory=MetadataConf)
    land: LandConf = Field(default_factory=LandConf)
    detect: DetectConf = Field(default_factory=DetectConf)
    guard: Guard = Field(default_factory=Guard)
    lease: LeaseConf = Field(default_factory=LeaseConf)
    validation: ValidationConf = Field(default_factory=ValidationConf)
    console: ConsoleConf = Field(default_factory=ConsoleConf)
    deploy: DeployConf = Field(default_factory=DeployConf)

    def with_overrides(self, *pairs: str) -> Config:
        """A copy of this config with ``a.b=c`` overrides applied (values parsed as YAML)."""
        data = self.model_dump()
        for pair in pairs:
            _apply_pair(data, pair)
        return _validate(data, "overrides")


def conf_dir() -> Path:
    """The folder holding base.yaml: the checkout's conf/ or, from a wheel, the packaged copy."""
    if (REPO_CONF / "base.yaml").exists():
        return REPO_CONF
    try:
        packaged: Any = resources.files("stripe_recon.conf")
    except ModuleNotFoundError:  # conf/ has no __init__.py: not importable from inside a zip
        packaged = None
    if packaged is not None:
        # conf/ is a namespace package: files() gives a MultiplexedPath (no usable str()); joinpath
        # gives a real pathlib.Path for an installed wheel, a zipfile.Path inside a zip.
        base = packaged.joinpath("base.yaml")
        if isinstance(base, Path) and base.is_file():
            return base.parent
    return _extract_zipped_conf(packaged if packaged is not None else _zip_conf())


def _zip_conf() -> Any:
    import zipfile

    archive = getattr(__loader__, "archive", None)  # set by zipimport
    if not archive:
        raise ConfigError("cannot find the packaged conf (base.yaml): install the stripe-recon wheel "
                          "or run from a checkout")
    return zipfile.Path(archive, at=f"{__package__}/conf/")


def _extract_zipped_conf(packaged: Any) -> Path:
    """Copy the packaged conf out of a zip (``spark-submit --py-files recon.zip``) to a temp folder,
    once per process, so every reader can use plain paths."""
    import tempfile

    global _EXTRACTED_CONF
    if _EXTRACTED_CONF is None:
        target = Path(tempfile.mkdtemp(prefix="stripe_recon_conf_"))

        def copy(node: Any, dest: Path) -> None:
            dest.mkdir(parents=True, exist_ok=True)
            for child in node.iterdir():
                if child.is_dir():
                    copy(child, dest / child.name)
                elif child.name.endswith((".yaml", ".json")):
                    (dest / child.name).write_bytes(child.read_bytes())

        copy(packaged, target)
        _EXTRACTED_CONF = target
    return _EXTRACTED_CONF


_EXTRACTED_CONF: Path | None = None


def expectations_dir() -> Path:
    return conf_dir() / "expectations"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}. Pass --config with an existing file.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_pair(data: dict[str, Any], pair: str) -> None:
    if "=" not in pair:
        raise ConfigError(f"override {pair!r} must look like key.path=value (e.g. storage.root=/tmp/x)")
    path, raw = pair.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {pair!r} has an empty key path")
    node = data
    for i, key in enumerate(keys[:-1]):
        if key not in node or not isinstance(node[key], dict):
            node.setdefault(key, {})
            if not isinstance(node[key], dict):
                raise ConfigError(f"{'.'.join(keys[: i + 1])} is not a section; cannot set {path}")
        node = node[key]
    node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None


def _env_pairs(defaults: dict[str, Any], environ: dict[str, str]) -> list[str]:
    """RECON_STORAGE_ROOT=x -> storage.root=x. Keys hold underscores, so match the tree greedily;
    a double underscore (RECON_SPARK__SHUFFLE_PARTITIONS) is also accepted as the separator."""
    pairs = []
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_CONFIG:
            continue
        rest = name[len(ENV_PREFIX):].lower().replace("__", "_")
        path = _match_path(defaults, rest)
        if path:
            pairs.append(f"{path}={value}")
    return pairs


def _match_path(node: Any, rest: str) -> str | None:
    if not isinstance(node, dict):
        return None
    for key in sorted(node, key=len, reverse=True):
        if rest == key:
            return key
        if rest.startswith(key + "_"):
            sub = _match_path(node[key], rest[len(key) + 1:])
            if sub:
                return f"{key}.{sub}"
    return None


def _validate(data: dict[str, Any], origin: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                parent = err["loc"][:-1]
                allowed = _allowed_keys(parent)
                problems.append(f"{loc}: unknown key; allowed here: {', '.join(allowed)}")
            else:
                problems.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
        # One line (the CLI prints errors as one line): the problems first, where they came from last.
        raise ConfigError(f"invalid configuration: {'; '.join(problems)} (from {origin})") from None


def _allowed_keys(parent: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in parent:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None or not hasattr(field.annotation, "model_fields"):
            return ["(see conf/base.yaml)"]
        model = field.annotation
    return sorted(model.model_fields)


def resolve_config_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it exists; else, for a bare name (``glue.yaml``) or ``conf/<name>``, the
    copy packaged in the wheel, so an installed job (Glue, Databricks, spark-submit) needs no checkout."""
    p = Path(path)
    if p.exists() or not (len(p.parts) == 1 or (len(p.parts) == 2 and p.parts[0] == "conf")):
        return p
    packaged = conf_dir() / p.name
    return packaged if packaged.is_file() else p


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> Config:
    """Load base.yaml, then ``path`` (an environment file), RECON_* variables, then overrides."""
    base = _read_yaml(conf_dir() / "base.yaml")
    data = base
    origin = "conf/base.yaml"
    if path is not None:
        path = resolve_config_path(path)
        data = _merge(data, _read_yaml(path))
        origin += f" + {path}"
    env = dict(os.environ if environ is None else environ)
    for pair in _env_pairs(base, env) + list(overrides):
        _apply_pair(data, pair)
    return _validate(data, origin + " + overrides")
