"""silver.Commit: the one typed form of the metadata land attaches to a silver commit."""

from __future__ import annotations

from stripe_recon import silver, unknown


def test_a_commit_survives_its_json_form_and_keeps_the_keys_tables_already_hold():
    commit = silver.Commit(
        fingerprint="f" * 24, product_keys_from=7, unique=("id",), quarantine_runs=("r2",),
        landing=silver.Landing(run_id="r1", spec="s", input={"rows": 3, "h_lo": 1, "h_hi": 2}, rules_spec="q",
                               absent_columns=("description", "tax_code")))
    stored = commit.as_json()
    assert stored == {  # the keys earlier versions wrote: tables landed before still read the same
        "fingerprint": "f" * 24, "product_keys_from": 7, "unique": ["id"], "quarantine_runs": ["r2"],
        "landing": {"run_id": "r1", "spec": "s", "input": {"rows": 3, "h_lo": 1, "h_hi": 2}, "rules_spec": "q",
                    "absent_columns": ["description", "tax_code"]}}
    assert silver.Commit.of(stored) == commit
    assert commit.runs == unknown.runs_of(stored) == ["r1", "r2"]
    assert commit.with_quarantine_run("r3").quarantine_runs == ("r2", "r3")
    assert silver.absent_columns(stored) == ["description", "tax_code"]
    assert silver.product_keys_ready(stored, 7) and not silver.product_keys_ready(stored, 8)


def test_metadata_of_another_writer_vouches_for_nothing():
    for foreign in ({}, None, "text", {"landing": "x", "unique": "id", "product_keys_from": True,
                                       "fingerprint": 3, "quarantine_runs": [1, None], "other": {"a": 1}}):
        commit = silver.Commit.of(foreign)
        assert commit == silver.Commit() or commit.as_json() == {}
        assert commit.runs == [] and silver.absent_columns(foreign or {}) == []
    assert silver.Commit.of({"landing": {"run_id": 5, "absent_columns": ["b", 2, "a"]}}).landing == silver.Landing(
        absent_columns=("a", "b"))
