"""The served API against its own contract: schemathesis generates requests from ``/docs.json`` (valid
ones and ones that break the schema) for every public operation, sends them to a real ``bentoml
serve`` of the packaged Bento, and checks each answer: no 5xx, a status the spec declares for the
operation, the declared Content-Type, and a body that matches the declared schema.

Most schema-valid flights still break a rule JSON Schema cannot state (a date-time inside
``serve.time_window``, an hhmm clock time) and get a 400, so each valid case is also sent made
plausible (those fields set inside their rules, every other value as generated): those reach the
scorer and answer 200 or 422.

Bounded: at most ``MAX_EXAMPLES`` cases per operation and generation mode, derandomized (the same
requests every run), and ``BUDGET_S`` seconds of sending in all, shared fairly between the
operations and modes: about 1,800 requests in a minute on two cores."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode

from tests.pipeline import test_serving
from tests.pipeline.test_serving import Packaged, Server, serve_packaged

packaged = test_serving.packaged  # the fixture: the smoke pipeline's model and Bento (session-wide)

MAX_EXAMPLES = 300  # per operation and generation mode
BUDGET_S = 120.0  # no more requests after this many seconds in all
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(packaged: Packaged) -> Iterator[Server]:
    """This module's own `bentoml serve` of the packaged Bento (its own output and request log)."""
    with serve_packaged(packaged, "contract") as server:
        yield server


class Plausible:
    """Makes a generated flight pass the rules the spec states only in words (from /docs.json):
    date-times at noon on the first day of their window, hhmm fields as clock times."""

    def __init__(self, spec: dict[str, Any]) -> None:
        fields = spec["components"]["schemas"]["Flight"]["properties"]

        def variants(prop: dict[str, Any]) -> list[dict[str, Any]]:
            return [prop, *prop.get("anyOf", [])]

        self.times: dict[str, str] = {}
        for name, prop in fields.items():
            if any(v.get("format") == "date-time" for v in variants(prop)):
                start = re.search(r"from (\d{4}-\d{2}-\d{2}) \(inclusive\)", prop.get("description", ""))
                self.times[name] = f"{start.group(1) if start else '2013-06-15'}T12:00:00Z"
        self.hhmm = {name for name, prop in fields.items() if "hhmm" in prop.get("description", "")}

    def flight(self, flight: Any) -> Any:
        if not isinstance(flight, dict):
            return flight
        out = {**flight, **{k: v for k, v in self.times.items() if k in flight}}
        for name in self.hhmm & out.keys():
            value = out[name]
            if isinstance(value, int) and not isinstance(value, bool):
                out[name] = abs(value) // 100 % 24 * 100 + abs(value) % 100 % 60
        return out

    def body(self, body: Any) -> Any:
        if isinstance(body, dict) and isinstance(body.get("flights"), list):
            return {**body, "flights": [self.flight(f) for f in body["flights"]]}
        if isinstance(body, dict) and "flight" in body:
            return {**body, "flight": self.flight(body["flight"])}
        return body


def test_the_served_api_keeps_its_openapi_contract(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    plausible = Plausible(server.client.get("/docs.json").json())
    start = time.monotonic()
    sent: dict[str, int] = {}
    statuses: dict[str, dict[int, int]] = {}
    failures: list[str] = []

    def send(case: Case, key: str, session: requests.Session) -> None:
        response = case.call(base_url=server.url, session=session, timeout=60)
        sent[key] = sent.get(key, 0) + 1
        counts = statuses.setdefault(key, {})
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # every failure, not just the first (and no shrinking)
            failures.append(
                f"{key}: {case.body!r:.300}\n -> {response.status_code} {response.text[:300]!r}: {exc}"
            )

    def exercise(
        operation: APIOperation, mode: GenerationMode, session: requests.Session, deadline: float
    ) -> None:
        key = f"{operation.label} {mode.value}"

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Case) -> None:
            if time.monotonic() > deadline:
                return
            send(case, key, session)
            if mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
                case.body = plausible.body(case.body)
                send(case, f"{key} (plausible)", session)

        with contextlib.suppress(Unsatisfiable):  # nothing to negate: a GET without parameters
            check()

    # Each operation and mode gets an equal share of what is left of the budget (a GET's unused
    # share goes to the rest), so a slow machine sends fewer cases of each, never none of the last.
    runs = [
        (result.ok(), mode)
        for result in schema.get_all_operations()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    with requests.Session() as session:
        for i, (operation, mode) in enumerate(runs):
            now = time.monotonic()
            share = max(0.0, start + BUDGET_S - now) / (len(runs) - i)
            exercise(operation, mode, session, now + share)
    total = sum(sent.values())
    per = "; ".join(f"{k}: {sent[k]} {dict(sorted(statuses[k].items()))}" for k in sorted(sent))
    print(
        f"schemathesis: {total} requests in {time.monotonic() - start:.0f} s; per operation and mode: {per}"
    )
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(failures[:20])
    for path in ("/predict", "/predict_one"):
        assert sent.get(f"POST {path} negative", 0) >= 50, sent
        assert statuses.get(f"POST {path} positive (plausible)", {}).get(200, 0) >= 10, statuses
