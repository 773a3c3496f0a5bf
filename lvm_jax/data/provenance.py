"""One spelling per provenance value, so files from the reference and from this project compare.

The reference's tools record `norm: "l2_once"` and `metric: "ip"`; this
project's writers record `l2` and `inner_product` for the same vectors.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

CHECKED_FIELDS = ("embedder_id", "norm", "metric")
# field -> {spelling (lower case): canonical spelling}
SYNONYMS = {
    "norm": {"l2_once": "l2", "l2": "l2", "unit": "l2", "l2norm": "l2"},
    "metric": {"ip": "inner_product", "inner_product": "inner_product", "dot": "inner_product",
               "cosine": "inner_product"},
}
UNKNOWN = ("", "unknown", "none")


def canonical_value(field: str, value: Any) -> Optional[str]:
  """The canonical spelling of one provenance value; None when it is absent or unknown."""
  if value is None:
    return None
  text = str(value).strip()
  if text.lower() in UNKNOWN:
    return None
  if field == "embedder_id":
    return canonical_embedder_id(text)
  return SYNONYMS.get(field, {}).get(text.lower(), text)


def canonical_embedder_id(text: str) -> str:
  """Case, an organisation prefix and a trailing dimension do not name another embedder:
  the reference's "GTR-T5-base-768" is "sentence-transformers/gtr-t5-base"."""
  name = text.lower().rsplit("/", 1)[-1]
  head, _, tail = name.rpartition("-")
  return head if head and tail.isdigit() else name


def canonical(record: Dict[str, Any]) -> Dict[str, Optional[str]]:
  """{field: canonical value or None} for the fields a provenance check compares.

  `cosine` counts as inner product because every payload here holds unit vectors.
  """
  return {field: canonical_value(field, record.get(field)) for field in CHECKED_FIELDS}


def compare(first: Dict[str, Any], second: Dict[str, Any]):
  """(mismatches, unverified): the checked fields whose canonical values differ, and those
  that one side does not record."""
  a, b = canonical(first), canonical(second)
  mismatches = [f for f in CHECKED_FIELDS if a[f] is not None and b[f] is not None and a[f] != b[f]]
  unverified = [f for f in CHECKED_FIELDS if a[f] is None or b[f] is None]
  return mismatches, unverified
