"""OrganizationService."""

from __future__ import annotations

import pytest
from backend_common.orchestrator import AlreadyExistsError, InvalidArgumentError
from standalone_orchestrator.testing import CHANNEL, ORG1, ORG2, ORG3, OTHER_CHANNEL, Network


def test_register_and_list(fresh_orchestrator) -> None:  # type: ignore[no-untyped-def]
    net: Network = fresh_orchestrator(register=False)
    organization = net.client(ORG1).register_organization("https://org1.example.com")
    assert organization.id == ORG1
    assert organization.address == "https://org1.example.com"
    assert organization.creation_date.seconds > 0
    net.client(ORG2).register_organization("")
    listed = {o.id: o for o in net.client(ORG3).get_all_organizations()}
    assert set(listed) == {ORG1, ORG2}
    assert listed[ORG1] == organization
    # Per channel: nothing registered in the other channel yet.
    assert net.client(ORG1, OTHER_CHANNEL).get_all_organizations() == []


def test_register_twice_is_already_exists(net: Network) -> None:
    with pytest.raises(AlreadyExistsError) as error:
        net.client(ORG1).register_organization("http://again")
    assert error.value.oe_code == "OE0006"


def test_invalid_address_is_invalid_argument(fresh_orchestrator) -> None:  # type: ignore[no-untyped-def]
    net: Network = fresh_orchestrator(register=False)
    with pytest.raises(InvalidArgumentError) as error:
        net.client(ORG1, CHANNEL).register_organization("not a url")
    assert error.value.oe_code == "OE0101"
    assert net.client(ORG1).get_all_organizations() == []
