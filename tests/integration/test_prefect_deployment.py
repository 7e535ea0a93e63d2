"""Deployed for real: a Prefect server and a process worker run the feed; reruns are safe.

The worker runs outside the repository and without BATCHBRIDGE_HOME: the deployments'
dotted entrypoints are imported from the installed package.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from batchbridge.cli.deploy import deploy_command
from batchbridge.demo.keys import write_secret_file
from batchbridge.demo.lab_data import expected_quarantined, generate_lab_rows
from batchbridge.demo.scenario import LabFeedScenario, lab_file_name
from batchbridge.deploy.names import WORK_POOL, tenant_queue
from batchbridge.deploy.prefect_yaml import CHECKOUT_ENV, CONFIG_DIR_ENV, PULL_STEP
from batchbridge.ledger.run_report import RunReport
from batchbridge.ledger.store import LedgerStore
from tests.integration.flow_helpers import target_rows, without_lineage
from tests.support.prefect_server import PrefectServer, start_prefect_server

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
FILE_DATE = date(2026, 11, 20)
BAD_ROWS = {"unmapped_code": 2, "bad_npi": 1}
ROWS = 30
LATE_ROWS = 5
NIGHTLY = "nightly-feed/lab_results-nightly"
RUN_TIMEOUT_SECONDS = 120


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[PrefectServer]:
    """A real `prefect server start` on SQLite, stopped (with its workers) after the test."""
    with start_prefect_server(tmp_path / "prefect-home") as server:
        yield server


def _worker_logs(server: PrefectServer) -> str:
    return "\n".join(worker.log_tail() for worker in server.workers)


def _run(server: PrefectServer, deployment: str, **parameters: object) -> FlowRun:
    """Trigger a deployment through the API and wait for its final state."""
    flow_run = run_deployment(
        deployment, parameters=parameters, timeout=RUN_TIMEOUT_SECONDS, poll_interval=1
    )
    assert flow_run.state is not None and flow_run.state.is_final(), (
        f"flow run {flow_run.id} not finished in {RUN_TIMEOUT_SECONDS} s: {flow_run.state}\n"
        + _worker_logs(server)
    )
    return flow_run


def _retry_from_the_ui(server: PrefectServer, flow_run: FlowRun) -> FlowRun:
    """What the UI's Retry button sends, then wait until the second attempt is final."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            flow_run.id,
            State(type=StateType.SCHEDULED, name="AwaitingRetry", message="Retry from the UI"),
            force=True,
        )
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            again = client.read_flow_run(flow_run.id)
            if again.run_count > flow_run.run_count and again.state and again.state.is_final():
                return again
            time.sleep(1)
    raise AssertionError(f"retry of {flow_run.id} did not finish\n{_worker_logs(server)}")


def _report(database_url: str, flow_run: FlowRun) -> RunReport:
    """The ledger's report of the flow run's latest attempt."""
    store = LedgerStore.from_url(database_url)
    try:
        run = store.run_for_flow_run(str(flow_run.id))
    finally:
        store.engine.dispose()
    assert run is not None and run.report is not None, f"no ledger run for {flow_run.id}"
    return RunReport.from_dict(run.report)


def _pin_another_partner_key(scenario: LabFeedScenario, fpr: str) -> None:
    """The partner's new signing key, confirmed out of band, added to the feed's pins."""
    secret = scenario.root / "secrets" / "partner_public_2.asc"
    write_secret_file(secret, scenario.partner.export_public(fpr))
    feed = yaml.safe_load(scenario.feed_path.read_text(encoding="utf-8"))
    feed["pgp"]["partner_public_keys"].append("file:../secrets/partner_public_2.asc")
    scenario.feed_path.write_text(yaml.safe_dump(feed, sort_keys=False), encoding="utf-8")


def test_deployed_feed_retried_from_the_ui_and_rerun_changes_nothing(
    scenario: LabFeedScenario,
    postgres_url: str,
    prefect_server: PrefectServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good, late = lab_file_name(FILE_DATE), lab_file_name(FILE_DATE, seq=2)
    scenario.drop_file(
        good, generate_lab_rows(ROWS, seed=7, file_date=FILE_DATE, bad_rows=BAD_ROWS)
    )
    # The partner rotated its signing key without telling us: this file fails to verify.
    new_key = scenario.partner.generate_key("Acme Lab Signing 2", "signing2@acme-lab.example")
    scenario.drop_file(
        late,
        # Record ids after the good file's (generated ids count up from 1).
        generate_lab_rows(ROWS + LATE_ROWS, seed=8, file_date=FILE_DATE).tail(LATE_ROWS),
        signer_fpr=new_key,
    )
    valid = ROWS - expected_quarantined(BAD_ROWS)

    # `batchbridge deploy --apply`, for the scenario's feed and this server: the
    # `prefect deploy` subprocess reads the API URL from the environment.
    for key, value in prefect_server.client_env().items():
        monkeypatch.setenv(key, value)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        assert (
            deploy_command(
                check=False,
                apply=True,
                config_dir=scenario.config_dir,
                prefect_file=tmp_path / "prefect.yaml",
                project_root=REPO_ROOT,
            )
            == 0
        )
        with get_client(sync_client=True) as client:
            queue = client.read_work_queue_by_name(
                tenant_queue(scenario.tenant), work_pool_name=WORK_POOL
            )
            assert queue.concurrency_limit == 1
            slot = client.read_global_concurrency_limit_by_name(tenant_queue(scenario.tenant))
            assert slot.limit == 1 and slot.active  # held by each run: see tenant_slot
            deployment = client.read_deployment_by_name(NIGHTLY)
            assert deployment.parameters == {"feed": "lab_results"}
            assert deployment.work_queue_name == tenant_queue(scenario.tenant)
            limit = deployment.global_concurrency_limit
            assert limit is not None and limit.limit == 1  # one run of the feed at a time
            # A module path: the worker imports the flow from the installed package.
            assert deployment.entrypoint == "batchbridge.flows.nightly.nightly_feed"
            # The pull step checks the worker's settings (and enters a checkout only
            # where $BATCHBRIDGE_HOME is set, which it is not here).
            assert deployment.pull_steps == [{PULL_STEP: {}}]

        # What every production worker is given: the feed folder, the ledger, staging,
        # and the settings the feed's secret references point at. No checkout: the
        # worker starts in a folder outside the repository, with neither
        # BATCHBRIDGE_HOME nor a PYTHONPATH that could lead it back to one.
        outside = tmp_path / "worker"
        outside.mkdir()
        assert not outside.resolve().is_relative_to(REPO_ROOT)
        prefect_server.start_worker(
            WORK_POOL,
            cwd=outside,
            env={
                CHECKOUT_ENV: "",
                "PYTHONPATH": "",
                CONFIG_DIR_ENV: str(scenario.config_dir),
                "BATCHBRIDGE_DATABASE_URL": postgres_url,
                "BATCHBRIDGE_STAGING_DIR": str(tmp_path / "worker-staging"),
                "BB_TEST_WAREHOUSE_URL": postgres_url,
            },
        )

        # 1. The nightly run through the API: the good file loads, the other fails.
        nightly = _run(prefect_server, NIGHTLY)
        assert nightly.state is not None and nightly.state.is_failed(), nightly.state
        first = _report(postgres_url, nightly)
        assert first.status == "failed" and not first.is_rerun
        by_name = {f.name: f for f in first.files}
        assert by_name[good].outcome == "reconciled" and not by_name[good].is_rerun
        assert by_name[good].targets["warehouse"].inserted == valid
        assert (by_name[late].outcome, by_name[late].reason) == ("failed", "wrong_signer")
        loaded_once = target_rows(postgres_url)
        assert len(loaded_once) == valid

        # 2. The key is pinned; the on-call engineer presses Retry on the failed run.
        # Every stage runs again (nothing is cached), but the ledger skips the done file
        # and retries only the failed one.
        _pin_another_partner_key(scenario, new_key)
        retried = _retry_from_the_ui(prefect_server, nightly)
        assert retried.state is not None and retried.state.is_completed(), retried.state
        retry = _report(postgres_url, retried)
        assert retry.status == "succeeded" and retry.is_rerun
        assert retry.skipped == {good: "already_done"}
        (late_report,) = retry.files
        assert late_report.name == late and late_report.is_rerun
        assert late_report.outcome == "reconciled" and late_report.balanced
        assert late_report.targets["warehouse"].inserted == LATE_ROWS
        after_retry = target_rows(postgres_url)
        assert len(after_retry) == valid + LATE_ROWS
        assert {k: after_retry[k] for k in loaded_once} == loaded_once  # untouched

        # 3. A custom run from the UI: this one file again, forced. Nothing changes.
        rerun = _run(prefect_server, NIGHTLY, files=[good], force=True)
        assert rerun.state is not None and rerun.state.is_completed(), rerun.state
        second = _report(postgres_url, rerun)
        assert second.status == "succeeded" and second.is_rerun
        (again,) = second.files
        assert again.name == good and again.is_rerun
        assert again.file_id == by_name[good].file_id
        assert again.outcome == "reconciled" and again.balanced
        counts = again.targets["warehouse"]
        assert (counts.inserted, counts.updated, counts.unchanged) == (0, 0, valid)
        assert without_lineage(target_rows(postgres_url)) == without_lineage(after_retry)

        with get_client(sync_client=True) as client:  # every run gave its tenant slot back
            slot = client.read_global_concurrency_limit_by_name(tenant_queue(scenario.tenant))
            assert slot.active_slots == 0

    # Ciphertext was staged per tenant and feed, in 0700 folders, and removed after use.
    staging = tmp_path / "worker-staging"
    feed_dir = staging / scenario.tenant / scenario.feed
    for folder in (staging, staging / scenario.tenant, feed_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert list(feed_dir.iterdir()) == []
