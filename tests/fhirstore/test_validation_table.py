"""The committed element table is what the build script makes from the official core package."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from fhirstore.validation import build_table
from fhirstore.validation.table import TABLE, table


def test_committed_table_matches_a_rebuild(r4b_core_package: Path) -> None:
    committed = json.loads(gzip.decompress(TABLE.read_bytes()))
    assert build_table.build(r4b_core_package) == committed


def test_table_knows_the_required_bindings_and_what_it_cannot_check() -> None:
    loaded = table()
    gender = loaded.types["Patient"]["gender"]
    assert gender.codes == {"male", "female", "other", "unknown"}
    assert loaded.types["Patient.contact"]["gender"].codes == gender.codes
    assert loaded.types["Observation"]["valueQuantity"].kind == "Quantity"
    assert loaded.types["Questionnaire.item"]["item"].kind == "Questionnaire.item"
    # Codes bound to value sets the package cannot expand are left unchecked, and say why.
    assert loaded.types["Attachment"]["contentType"].codes is None
    assert "urn:ietf:bcp:13" in loaded.unexpanded["http://hl7.org/fhir/ValueSet/mimetypes"]
