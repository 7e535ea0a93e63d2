"""The FHIR test server enforces the semantics the target relies on (in-process, no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fhir_server import (
    FhirFailure,
    ServerState,
    parse_tokens,
    run_transaction,
    search,
)

SYSTEM = "urn:test:obs"
PATIENTS = "urn:test:patient"


def state(reject: set[str] | None = None) -> ServerState:
    return ServerState("cid", "secret", 3600, set(reject or ()), None)


def patient(key: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": PATIENTS, "value": key}]}


def observation(record: str, key: str = "p1", code: str = "2345-7", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": SYSTEM, "value": record}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient?identifier={PATIENTS}|{key}"},
        **extra,
    }


def create(resource: dict[str, Any], match: str | None = None) -> dict[str, Any]:
    request = {"method": "POST", "url": resource["resourceType"]}
    if match is not None:
        request["ifNoneExist"] = f"identifier={match}"
    return {"resource": resource, "request": request}


def update(resource: dict[str, Any]) -> dict[str, Any]:
    value = resource["identifier"][0]["value"]
    url = f"{resource['resourceType']}?identifier={SYSTEM}|{value}"
    return {"resource": resource, "request": {"method": "PUT", "url": url}}


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def statuses(answer: dict[str, Any]) -> list[str]:
    return [entry["response"]["status"] for entry in answer["entry"]]


def codes(answer: dict[str, Any]) -> list[str]:
    return [
        entry["response"]["outcome"]["issue"][0]["details"]["coding"][0]["code"]
        for entry in answer["entry"]
    ]


def test_conditional_create_then_update_then_no_op() -> None:
    s = state()
    first = run_transaction(
        s, transaction(create(patient("p1"), f"{PATIENTS}|p1"), update(observation("R1")))
    )
    again = run_transaction(
        s, transaction(create(patient("p1"), f"{PATIENTS}|p1"), update(observation("R1")))
    )
    changed = run_transaction(
        s,
        transaction(
            create(patient("p1"), f"{PATIENTS}|p1"),
            update(observation("R1", valueString="x")),
        ),
    )

    assert statuses(first) == ["201 Created", "201 Created"]
    assert statuses(again) == ["200 OK", "200 OK"]
    assert codes(again) == [
        "SUCCESSFUL_CREATE_WITH_CONDITIONAL_MATCH",
        "SUCCESSFUL_UPDATE_NO_CHANGE",
    ]
    assert again["entry"][1]["response"]["etag"] == 'W/"1"'  # no new version
    assert codes(changed)[1] == "SUCCESSFUL_UPDATE"
    assert changed["entry"][1]["response"]["etag"] == 'W/"2"'
    stored = list(s.store.resources["Observation"].values())
    assert len(stored) == 1
    patient_id = next(iter(s.store.resources["Patient"]))
    assert stored[0]["subject"]["reference"] == f"Patient/{patient_id}"


def test_a_transaction_is_atomic() -> None:
    s = state(reject={"9999-9"})
    with pytest.raises(FhirFailure) as caught:
        run_transaction(
            s,
            transaction(
                create(patient("p1"), f"{PATIENTS}|p1"),
                update(observation("R1")),
                update(observation("R2", code="9999-9")),
            ),
        )

    assert (caught.value.status, caught.value.code) == (422, "code-invalid")
    assert s.store.resources == {}


@pytest.mark.parametrize(
    ("field", "code"), [("status", "required"), ("code", "required"), ("subject", "required")]
)
def test_observations_missing_required_elements_are_refused(field: str, code: str) -> None:
    resource = observation("R1")
    del resource[field]
    with pytest.raises(FhirFailure) as caught:
        run_transaction(state(), transaction(update(resource)))
    assert (caught.value.status, caught.value.code) == (422, code)


def test_more_than_one_match_is_412_for_conditional_create_update_and_references() -> None:
    s = state()
    run_transaction(s, transaction(create(patient("dup")), create(patient("dup"))))
    twice = f"{PATIENTS}|dup"

    for bundle in (
        transaction(create(patient("dup"), twice)),
        transaction(update(observation("R1", key="dup"))),
    ):
        with pytest.raises(FhirFailure) as caught:
            run_transaction(s, bundle)
        assert (caught.value.status, caught.value.code) == (412, "multiple-matches")


def test_a_reference_to_no_patient_is_refused() -> None:
    with pytest.raises(FhirFailure) as caught:
        run_transaction(state(), transaction(update(observation("R1", key="nobody"))))
    assert caught.value.code == "not-found"


def test_search_by_identifier_tokens_with_count_and_paging() -> None:
    s = state()
    run_transaction(
        s,
        transaction(
            create(patient("p1"), f"{PATIENTS}|p1"),
            *[update(observation(f"R{i}")) for i in range(5)],
        ),
    )
    wanted = ",".join(f"{SYSTEM}|R{i}" for i in (0, 2, 4, 9))

    counted = search(s, "Observation", f"identifier={wanted}&_summary=count")
    page = search(s, "Observation", f"identifier={wanted}&_count=2&_elements=identifier")

    assert counted["total"] == 3
    assert "entry" not in counted
    assert len(page["entry"]) == 2
    assert set(page["entry"][0]["resource"]) == {"resourceType", "id", "meta", "identifier"}
    assert any(link["relation"] == "next" for link in page["link"])
    with pytest.raises(FhirFailure):
        search(s, "Observation", "name=x")


def test_token_parsing_honours_escapes() -> None:
    assert parse_tokens("a|b\\|c,d\\,e") == [("a", "b|c"), (None, "d,e")]
