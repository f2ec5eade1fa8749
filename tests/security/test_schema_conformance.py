"""The schemathesis run of issue 12 ("How it is checked"): every operation, as
provider-admin, with schemathesis's checks (status codes, content types, headers and
response bodies as the OpenAPI document says, 405 with `Allow`, auth). Derandomized, so a
run is reproducible; bounded (~30 s on two cores).

Left out: `positive_data_acceptance` (the schema says a document is any mapping; the
policy language's rules are not expressed in JSON Schema, so schema-valid bodies get a
422) and `negative_data_rejection` (unknown query parameters are ignored, not refused)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests.manager.conftest import Live
from tests.manager.test_openapi import schema
from tests.manager.test_openapi import server as server  # the module fixture, reused


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_conforms_to_its_openapi_document(
    case: schemathesis.Case[Any], server: Live
) -> None:
    if case.path.endswith("/desired") and case.query:
        case.query["wait"] = 0  # never long-poll in a fuzz run
    headers = {"Authorization": f"Bearer {server.admin}"}
    case.call_and_validate(
        base_url=server.url,
        headers=headers,
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )
