"""The blast-radius guard: decide whether a correction plan may be pushed without a human.

A plan is *held* when it

- changes more than ``guard.max_change_ratio`` of the catalog (Stripe writes / catalog size),
- archives more than ``guard.max_archive_ratio`` of the catalog, or
- was built from an internal snapshot that shrank more than ``guard.max_shrink_ratio`` since the
  previous ``land_internal`` run (product counts from the runs ledger ``gold.runs``), or from a
  Stripe side whose products or prices shrank more than that since the previous ``land_stripe``
  (an export that lost objects would make the plan create them again), or
- creates objects while the latest Stripe landing quarantined objects: a rejected Stripe object is
  absent from silver, so its internal record looks missing and a create could duplicate it.

The catalog size is the larger of the two sides (internal products + prices, Stripe products +
prices): a truncated internal snapshot must not make the ratio look small, and a first sync into an
empty Stripe account does not divide by zero.

Example::

    verdict = evaluate(cfg.guard, GuardInput(writes=120, archives=3, catalog=2000,
                                             internal_now=990, internal_prev=1000))
    verdict.held, verdict.reasons   # (True, ['change ratio 6.00% > max_change_ratio 5.00% ...'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import Row, SparkSession

from .config import Config, Guard
from .errors import InputError
from .ledger import Recent, recent_ok

#: Ledger count keys that may hold the landed internal product count (first one present wins).
PRODUCT_COUNT_KEYS = ("products.silver_rows", "products.landed")
LAND_INTERNAL_STAGE = "land_internal"
LAND_STRIPE_STAGE = "land_stripe"
#: Stripe entities whose landed count (``<entity>.silver_rows`` in the ledger) the shrink check follows.
STRIPE_ENTITIES = ("products", "prices")


@dataclass(frozen=True)
class Snapshot:
    """One landed entity's row count in the newest and in the previous successful landing."""

    entity: str  # products | prices
    now: int | None
    prev: int | None


@dataclass(frozen=True)
class GuardInput:
    writes: int  # corrections that write to Stripe
    archives: int  # archive_product + archive_price
    catalog: int  # max(internal rows, Stripe rows)
    internal_now: int | None = None  # products in the latest internal snapshot
    internal_prev: int | None = None  # products in the snapshot before it
    creates: int = 0  # create_product + create_price
    stripe_quarantined: int = 0  # Stripe objects the latest land_stripe quarantined
    stripe_snapshots: tuple[Snapshot, ...] = ()  # Stripe products / prices, newest vs previous landing


@dataclass
class Verdict:
    held: bool
    reasons: list[str] = field(default_factory=list)


def evaluate(guard: Guard, inp: GuardInput) -> Verdict:
    """Apply the three thresholds; every breached one is listed in ``reasons``."""
    reasons: list[str] = []
    catalog = max(inp.catalog, 1)
    change = inp.writes / catalog
    if inp.writes and change > guard.max_change_ratio:
        reasons.append(
            f"change ratio {change:.2%} > max_change_ratio {guard.max_change_ratio:.2%} "
            f"({inp.writes} Stripe writes, catalog of {inp.catalog})"
        )
    archive = inp.archives / catalog
    if inp.archives and archive > guard.max_archive_ratio:
        reasons.append(
            f"archive ratio {archive:.2%} > max_archive_ratio {guard.max_archive_ratio:.2%} "
            f"({inp.archives} archives, catalog of {inp.catalog})"
        )
    if inp.internal_prev and inp.internal_now is not None:
        shrink = (inp.internal_prev - inp.internal_now) / inp.internal_prev
        if shrink > guard.max_shrink_ratio:
            reasons.append(
                f"internal snapshot shrank {shrink:.2%} > max_shrink_ratio {guard.max_shrink_ratio:.2%} "
                f"({inp.internal_prev} -> {inp.internal_now} products since the previous land_internal run)"
            )
    for snap in inp.stripe_snapshots:
        if snap.prev and snap.now is not None:
            shrink = (snap.prev - snap.now) / snap.prev
            if shrink > guard.max_shrink_ratio:
                reasons.append(
                    f"Stripe {snap.entity} shrank {shrink:.2%} > max_shrink_ratio {guard.max_shrink_ratio:.2%} "
                    f"({snap.prev} -> {snap.now} since the previous land_stripe run): an incomplete export "
                    f"would make the plan create what it lost"
                )
    if inp.creates and inp.stripe_quarantined:
        reasons.append(
            f"the latest Stripe landing quarantined {inp.stripe_quarantined} objects and the plan creates "
            f"{inp.creates}: a create could duplicate a quarantined object (fix the export, see gold.quarantine)"
        )
    return Verdict(bool(reasons), reasons)


def _landings(spark: SparkSession, cfg: Config, stage: str, recent: Recent | None) -> list[Row]:
    """The two newest successful ledger rows of ``stage`` (newest first), from ``recent`` when the
    caller already read the ledger (:func:`ledger.recent_ok`)."""
    if recent is None or stage not in recent:
        recent = recent_ok(spark, cfg, [stage])
    return recent[stage][:2]


def stripe_quarantined(spark: SparkSession, cfg: Config, recent: Recent | None = None) -> int:
    """Objects quarantined by the newest successful ``land_stripe`` (0 when there is none)."""
    rows = _landings(spark, cfg, LAND_STRIPE_STAGE, recent)
    return int((rows[0]["counts"] or {}).get("quarantined") or 0) if rows else 0


def stripe_snapshot_counts(spark: SparkSession, cfg: Config, recent: Recent | None = None) -> tuple[Snapshot, ...]:
    """Stripe products and prices landed by the newest and the previous successful ``land_stripe``
    (``<entity>.silver_rows``); None where there is no such landing."""
    rows = _landings(spark, cfg, LAND_STRIPE_STAGE, recent)

    def pick(i: int, entity: str) -> int | None:
        counts = rows[i]["counts"] if len(rows) > i else None
        value = (counts or {}).get(f"{entity}.silver_rows")
        return None if value is None else int(value)

    return tuple(Snapshot(e, pick(0, e), pick(1, e)) for e in STRIPE_ENTITIES)


def refuse_empty_stripe(counts: dict[str, dict[str, int]], where: str, allow_empty: bool) -> None:
    """Raise InputError when the Stripe input holds no products or no prices (``counts`` = land's
    per-entity counts, ``rows_in``) unless ``allow_empty``: an empty side would plan creating the
    whole catalog again. Call it before silver is replaced."""
    empty = [e for e in STRIPE_ENTITIES if not (counts.get(e) or {}).get("rows_in")]
    if empty and not allow_empty:
        raise InputError(
            f"Stripe input {where} holds no {' and no '.join(empty)}: against a full internal catalog the plan "
            "would create everything again. Fix the export, or pass --allow-empty "
            "(sources.stripe.allow_empty=true) if the Stripe account really has none."
        )


def internal_snapshot_counts(spark: SparkSession, cfg: Config,
                             recent: Recent | None = None) -> tuple[int | None, int | None]:
    """(latest, previous) internal product counts from the last two successful ``land_internal``
    ledger rows; None where there is no such run or no known count key."""
    rows = _landings(spark, cfg, LAND_INTERNAL_STAGE, recent)

    def pick(counts: dict[str, int] | None) -> int | None:
        for key in PRODUCT_COUNT_KEYS:
            if counts and counts.get(key) is not None:
                return int(counts[key])
        return None

    now = pick(rows[0]["counts"]) if rows else None
    prev = pick(rows[1]["counts"]) if len(rows) > 1 else None
    return now, prev
