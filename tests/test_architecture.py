"""The layering in `.importlinter` has teeth: each two-way tie between packages that the
architecture's second pass removed would break a contract again if it came back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import configuration
from importlinter.application.use_cases import read_user_options
from importlinter.contracts.layers import LayersContract

CONFIG = Path(__file__).resolve().parent.parent / ".importlinter"

# (importer, imported): the half of each old tie that would now run back up, between today's
# modules (goals/reminders.py and notifications/scheduler.py moved to scheduling/, and
# worker/defer.py to goaltrack/defer.py).
TIES = [
    ("goaltrack.goals.service", "goaltrack.account.service"),  # goals <-> account
    ("goaltrack.notifications.service", "goaltrack.account.tasks"),  # account <-> notifications
    ("goaltrack.auth.service", "goaltrack.account.models"),  # auth <-> account
    ("goaltrack.auth.service", "goaltrack.devices.service"),  # devices <-> auth
    ("goaltrack.db", "goaltrack.worker.outbox"),  # db <-> worker
]


@pytest.fixture(scope="module")
def contracts() -> list[LayersContract]:
    configuration.configure()
    options = read_user_options(str(CONFIG))
    return [
        LayersContract(
            name=contract["name"],
            session_options=options.session_options,
            contract_options=contract,
        )
        for contract in options.contracts_options
        if contract["type"] == "layers"
    ]


def graph() -> Any:
    return grimp.build_graph("goaltrack", cache_dir=None)


def broken(contracts: list[LayersContract], graph: Any) -> list[str]:
    return [c.name for c in contracts if not c.check(graph, verbose=False).kept]


def test_the_code_keeps_the_layers(contracts: list[LayersContract]) -> None:
    assert len(contracts) == 2
    assert broken(contracts, graph()) == []


@pytest.mark.parametrize(("importer", "imported"), TIES)
def test_each_old_tie_breaks_a_layer(
    contracts: list[LayersContract], importer: str, imported: str
) -> None:
    tied = graph()
    assert {importer, imported} <= tied.modules
    tied.add_import(importer=importer, imported=imported)
    assert broken(contracts, tied)
