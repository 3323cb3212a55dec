"""Blast-radius guard: thresholds (pure) and the internal snapshot counts read from the runs ledger."""

from __future__ import annotations

from stripe_recon.config import Guard
from stripe_recon.guard import GuardInput, evaluate, internal_snapshot_counts
from stripe_recon.ledger import Run

G = Guard(max_change_ratio=0.05, max_archive_ratio=0.01, max_shrink_ratio=0.10)


def test_within_limits_is_not_held():
    v = evaluate(G, GuardInput(writes=50, archives=10, catalog=1000, internal_now=950, internal_prev=1000))
    assert (v.held, v.reasons) == (False, [])


def test_each_threshold_holds_on_its_own():
    change = evaluate(G, GuardInput(writes=51, archives=0, catalog=1000))
    assert change.held and len(change.reasons) == 1 and "max_change_ratio" in change.reasons[0]
    assert "51 Stripe writes" in change.reasons[0]
    archive = evaluate(G, GuardInput(writes=11, archives=11, catalog=1000))
    assert archive.held and [r.split(" ")[0] for r in archive.reasons] == ["archive"]
    shrink = evaluate(G, GuardInput(writes=0, archives=0, catalog=1000, internal_now=899, internal_prev=1000))
    assert shrink.held and "1000 -> 899" in shrink.reasons[0] and "max_shrink_ratio" in shrink.reasons[0]
    edge = evaluate(G, GuardInput(writes=0, archives=0, catalog=1000, internal_now=900, internal_prev=1000))
    assert not edge.held  # exactly 10% is allowed


def test_all_breaches_are_listed_and_empty_catalog_does_not_divide_by_zero():
    v = evaluate(G, GuardInput(writes=5, archives=5, catalog=0, internal_now=0, internal_prev=100))
    assert v.held and len(v.reasons) == 3
    assert not evaluate(G, GuardInput(writes=0, archives=0, catalog=0)).held


def test_truncated_snapshot_from_the_ledger(spark, cfg):
    assert internal_snapshot_counts(spark, cfg) == (None, None)
    for n in (1000, 100):
        with Run.new(spark, cfg).stage("land_internal") as st:
            st.counts.update({"products.silver_rows": n, "prices.silver_rows": 2 * n})
    with Run.new(spark, cfg).stage("land_stripe") as st:  # other stages do not count
        st.counts["products.silver_rows"] = 7
    now, prev = internal_snapshot_counts(spark, cfg)
    assert (now, prev) == (100, 1000)
    v = evaluate(G, GuardInput(writes=0, archives=0, catalog=3000, internal_now=now, internal_prev=prev))
    assert v.held and "90.00%" in v.reasons[0]


def test_creates_are_held_while_stripe_objects_sit_in_quarantine(spark, cfg):
    from stripe_recon.guard import stripe_quarantined

    assert stripe_quarantined(spark, cfg) == 0
    with Run.new(spark, cfg).stage("land_stripe") as st:
        st.counts.update({"rows_in": 10, "landed": 8, "quarantined": 2})
    assert stripe_quarantined(spark, cfg) == 2
    held = evaluate(G, GuardInput(writes=3, archives=0, catalog=1000, creates=1, stripe_quarantined=2))
    assert held.held and "quarantined 2 objects" in held.reasons[0] and "creates 1" in held.reasons[0]
    # updates alone cannot duplicate anything: not held
    assert not evaluate(G, GuardInput(writes=3, archives=0, catalog=1000, creates=0, stripe_quarantined=2)).held
