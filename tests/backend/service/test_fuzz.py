"""Fuzzing the real server from its own OpenAPI schema: bad input must be a 4xx, never a 5xx.

Schemathesis generates requests for every operation (valid and invalid by the schema);
a second, hypothesis-driven test sends each job type's own param names with wrong values,
which the schema alone cannot reach (params is a free-form object there).
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from .conftest import Server

FUZZ_SETTINGS = settings(max_examples=25, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("fuzz-state"), plugins=False)
    try:
        yield s.start()
    finally:
        s.close()


def test_no_request_the_schema_allows_or_forbids_makes_a_server_error(fuzz_server: Server):
    # driven by hand: schemathesis' pytest plugin does not run under pytest 9 yet
    api = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json", headers=fuzz_server.headers)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode == GenerationMode.NEGATIVE and operation.path == "/health":
                continue  # no params, no body, no token: nothing to make invalid

            @given(case=operation.as_strategy(generation_mode=mode))
            @FUZZ_SETTINGS
            def check(case):
                case.call_and_validate(base_url=fuzz_server.url, headers=fuzz_server.headers,
                                       checks=[not_a_server_error])

            check()
    assert fuzz_server.client(auth=False).get("/health").status_code == 200


SCALARS = (st.none() | st.booleans() | st.integers() | st.text(max_size=30)
           | st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(SCALARS,
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
# no existing folders here: a geopile job with a real folder for both paths would be valid
PATHS = st.sampled_from(["/etc/passwd", "/dev/null", "/proc/self/status", "/nonexistent/x.tif",
                         "relative.tif", "~/nonexistent", "", "\x00", "/" + "a" * 5000])


@pytest.mark.parametrize("job_type", ["classify", "finetune", "export", "geopile", "pretrain"])
def test_wrong_values_for_each_param_are_4xx(fuzz_server: Server, job_type):
    fields = {t["type"]: t["params"] for t in
              httpx.get(fuzz_server.url + "/job-types", headers=fuzz_server.headers).json()["types"]}
    names = [f["name"] for f in fields[job_type]]
    client = httpx.Client(base_url=fuzz_server.url, headers=fuzz_server.headers, timeout=30)

    @given(st.dictionaries(st.sampled_from(names), JSON | PATHS, max_size=len(names)))
    @FUZZ_SETTINGS
    def check(params):
        r = client.post("/jobs", json={"type": job_type, "params": params})
        assert r.status_code in (400, 422), (params, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str)

    try:
        check()
    finally:
        client.close()
    assert client.is_closed
    jobs = httpx.get(fuzz_server.url + "/jobs", headers=fuzz_server.headers).json()["jobs"]
    assert jobs == []
