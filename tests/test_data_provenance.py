"""provenance: one spelling per value, so the reference's records (GTR-T5-base-768, l2_once,
ip) and this project's (sentence-transformers/gtr-t5-base, l2, inner_product) compare equal,
while a really different embedder, norm or metric still differs."""

import pytest

from lvm_jax.data import provenance

REFERENCE = {"embedder_id": "GTR-T5-base-768", "norm": "l2_once", "metric": "ip",
             "payload_build_id": "payload584k_2025-10-24@sha256:12cfd8d7d92dca99",
             "created_at": "2025-10-26T20:22:59.816929",
             "creation_tool": "build_payload_aligned_training.py",
             "data_source": "wikipedia_584k_payload.npy"}
OURS = {"embedder_id": "sentence-transformers/gtr-t5-base", "norm": "l2",
        "metric": "inner_product", "created_at": "2026-11-26T09:00:00+00:00", "source_hash": "ab"}


@pytest.mark.parametrize("field, first, second", [
    ("embedder_id", "GTR-T5-base-768", "sentence-transformers/gtr-t5-base"),
    ("embedder_id", "GTR-T5-base-768", "gtr-t5-base"),
    ("embedder_id", "gtr-t5-base", "GTR-T5-BASE"),
    ("embedder_id", "sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2"),
    ("embedder_id", " GTR-T5-base-768 ", "gtr-t5-base"),
    ("norm", "l2_once", "l2"), ("norm", "L2_ONCE", "unit"), ("norm", "l2norm", "l2"),
    ("metric", "ip", "inner_product"), ("metric", "IP", "dot"),
    ("metric", "cosine", "inner_product")])
def test_spellings_of_one_value_compare_equal(field, first, second):
  assert provenance.canonical_value(field, first) == provenance.canonical_value(field, second)
  assert provenance.compare({field: first}, {field: second})[0] == []


def test_the_reference_record_and_ours_agree_on_every_checked_field():
  mismatches, unverified = provenance.compare(REFERENCE, OURS)
  assert (mismatches, unverified) == ([], [])
  assert provenance.canonical(REFERENCE) == provenance.canonical(OURS) == {
      "embedder_id": "gtr-t5-base", "norm": "l2", "metric": "inner_product"}


@pytest.mark.parametrize("other", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2",
                                   "sentence-t5-base", "gtr-t5-large", "GTR-T5-XL-768"])
def test_a_really_different_embedder_is_a_mismatch(other):
  mismatches, unverified = provenance.compare(REFERENCE, dict(OURS, embedder_id=other))
  assert (mismatches, unverified) == (["embedder_id"], [])


def test_a_version_suffix_is_part_of_the_name_but_a_dimension_is_not():
  """Only an all-digit last part is a dimension: -v2 or -l6 name another model."""
  assert provenance.canonical_embedder_id("all-MiniLM-L6-v2") == "all-minilm-l6-v2"
  assert provenance.canonical_embedder_id("all-MiniLM-L6-v1") != provenance.canonical_embedder_id(
      "all-MiniLM-L6-v2")
  assert provenance.canonical_embedder_id("org/GTR-T5-base-768") == "gtr-t5-base"
  assert provenance.canonical_embedder_id("768") == "768"  # nothing left to strip it from


@pytest.mark.parametrize("field, first, second", [
    ("norm", "l2_once", "none_applied"), ("norm", "l2", "l1"),
    ("metric", "ip", "l2"), ("metric", "inner_product", "euclidean")])
def test_a_different_norm_or_metric_is_a_mismatch(field, first, second):
  assert provenance.compare({field: first}, {field: second})[0] == [field]


@pytest.mark.parametrize("value", [None, "", "unknown", "UNKNOWN", "none", "  "])
def test_absent_or_unknown_values_are_unverified_not_mismatched(value):
  record = dict(OURS)
  if value is None:
    del record["embedder_id"]
  else:
    record["embedder_id"] = value
  assert provenance.canonical_value("embedder_id", value) is None
  assert provenance.compare(REFERENCE, record) == ([], ["embedder_id"])
  assert provenance.compare(record, REFERENCE) == ([], ["embedder_id"])


def test_compare_ignores_fields_it_does_not_check():
  assert provenance.compare(dict(REFERENCE, created_at="x", data_source="y"),
                            dict(REFERENCE, created_at="z")) == ([], [])
  assert provenance.compare({}, {}) == ([], list(provenance.CHECKED_FIELDS))
