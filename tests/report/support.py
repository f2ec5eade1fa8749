"""A report body over the examples with a failing assertion and a planted empty group, as
the manager would assemble it (the ledger part written out: two records)."""

from __future__ import annotations

from pathlib import Path

from hyperwall.io.files import read_documents
from hyperwall.manager.compliance import compliance
from hyperwall.manager_api import AuditVerification, ReportBody
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from tests.manager.support import assertion
from tests.manager.test_compliance import EMPTY, EXAMPLES


def example_report() -> ReportBody:
    docs, _ = read_documents([Path(EXAMPLES)])
    extra = [
        assertion("web-to-app", "web", "app", "app-api", "allow", "web-to-app <b>"),
        assertion("office-to-app", "office", "app", "app-api", "allow", "office-to-app <b>"),
        EMPTY,
    ]
    catalog = build_catalog([*docs, *[(d, Source("hwb", i)) for i, d in enumerate(extra)]])
    found = compliance(catalog, "acme")
    alice = {"token": "0a1b2c", "role": "tenant-admin", "scope": "acme"}
    history = [
        {
            "kind": kind,
            "tenant": tenant,
            "name": name,
            "records": [
                {
                    "revision": 7,
                    "time": 1_800_000_000.0,
                    "actor": alice,
                    "author": "tenant-admin@acme:0a1b2c",
                    "message": "tighten <the> shop",
                    "action": "change",
                }
            ],
        }
        for kind, tenant, name in found.documents
    ]
    return ReportBody(
        tenant="acme",
        revision=7,
        generated=1_800_000_100.0,
        ledger=AuditVerification(
            intact=True,
            records=7,
            start=1,
            head=7,
            headHash="ab" * 32,
            firstAltered=None,
            findings=[],
        ),
        assertions=found.assertions,
        groups=found.groups,
        matrix=found.matrix,
        groupsLeftOut=found.groups_left_out,
        history=history,
        lint=found.lint,
    )
