"""A host's program while workloads move to it: the documents with the movers placed on
it; the other hosts' programs are the ordinary ones."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hyperwall.compiler.fleet import compile_host
from hyperwall.compiler.moving import moving_program, placed
from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import Source
from hyperwall.policy.model import Catalog
from tests.manager.conftest import example_documents

CATALOG: Catalog = build_catalog((d, Source("t", i)) for i, d in enumerate(example_documents()))
KEYS = sorted(CATALOG.workloads)
HOSTS = sorted({w.host for w in CATALOG.workloads.values()})


def test_the_destination_enforces_the_mover_and_keeps_its_own() -> None:
    program = moving_program(CATALOG, {"acme/db-1": "hv1"}, "hv1")
    assert {ep.workload for ep in program.endpoints.values()} == {
        *(w.key for w in CATALOG.workloads.values() if w.host == "hv1"),
        "acme/db-1",
    }
    assert CATALOG.workloads["acme/db-1"].host == "hv2"  # the catalog itself is unchanged


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(HOSTS), max_size=3),
    st.sampled_from(HOSTS),
)
def test_moving_program_is_the_program_of_the_documents_after_the_moves_into_it(
    moves: dict[str, str], host: str
) -> None:
    mine = {k: h for k, h in moves.items() if h == host}
    if not mine:  # moves elsewhere leave this host's program as the documents make it
        ordinary = compile_host(CATALOG.config, CATALOG.workloads, host)
        assert moving_program(CATALOG, moves, host) == ordinary
    after = placed(CATALOG, mine)
    assert moving_program(CATALOG, moves, host) == compile_host(after.config, after.workloads, host)
