"""deployments/prefect.yaml: generated, up to date, a nightly deployment per feed; the replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import Flow, load_flow_from_entrypoint

from batchbridge.config import list_feeds, load_feed
from batchbridge.deploy.names import WORK_POOL, tenant_queue
from batchbridge.deploy.prefect_yaml import (
    CHECKOUT_ENV,
    CONFIG_DIR_ENV,
    LEDGER_ENVS,
    PULL_STEP,
    build_plan,
    check_prefect_file,
    enter_checkout,
)
from batchbridge.deploy.tables import FeedDeployment
from batchbridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FEEDS_DIR = ROOT / "deployments" / "feeds"
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"


@pytest.fixture(scope="module")
def deployments() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    # Prefect's own model of the file (what `prefect deploy` reads) must accept it.
    from prefect.cli.deploy._models import PrefectYamlModel

    PrefectYamlModel.model_validate(data)
    return {d["name"]: d for d in data["deployments"]}


def _flow_of(entrypoint: str) -> Flow[Any, Any]:
    # A module path into the installed package, loaded the way a worker loads it: Prefect
    # treats an entrypoint without a colon as one (no file of a checkout is read).
    assert entrypoint.startswith("batchbridge.flows.") and ":" not in entrypoint, entrypoint
    found = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    assert isinstance(found, Flow), f"{entrypoint} is not a Prefect flow"
    return found


def test_every_feed_has_a_nightly_deployment_on_its_schedule(
    deployments: dict[str, dict[str, Any]],
) -> None:
    feeds = list_feeds(FEEDS_DIR)
    assert feeds
    for feed in feeds:
        config = load_feed(feed, FEEDS_DIR).config
        deployment = deployments.get(f"{feed}-nightly")
        assert deployment is not None, f"no {feed}-nightly deployment in prefect.yaml"
        assert _flow_of(deployment["entrypoint"]).name == "nightly-feed"
        assert deployment["parameters"] == {"feed": feed}
        assert f"tenant:{config.tenant}" in deployment["tags"]
        # The tenant's queue carries its concurrency limit; one run of a feed at a time.
        assert deployment["work_pool"] == {
            "name": WORK_POOL,
            "work_queue_name": tenant_queue(config.tenant),
        }
        assert deployment["concurrency_limit"] == 1
        assert config.schedule is not None, f"feed {feed} has no schedule"
        (schedule,) = deployment["schedules"]
        assert schedule["cron"] == config.schedule.cron
        assert schedule["timezone"] == config.schedule.timezone


def test_replay_deployment_has_no_schedule(deployments: dict[str, dict[str, Any]]) -> None:
    replay = deployments["replay-quarantine"]
    assert _flow_of(replay["entrypoint"]).name == "replay-quarantine"
    assert not replay.get("schedules")
    assert not replay.get("parameters")  # requested_by must be given by the person running it


def test_prefect_yaml_is_generated_from_the_feeds() -> None:
    # Fails when a feed YAML changed (schedule, tenant, a new feed) without
    # `batchbridge deploy` regenerating deployments/prefect.yaml.
    check_prefect_file(build_plan(FEEDS_DIR), PREFECT_YAML)


def test_workers_run_from_their_own_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    assert data["pull"] == [{PULL_STEP: {}}]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CHECKOUT_ENV, str(ROOT))
    assert enter_checkout() == {"directory": str(ROOT)}
    assert Path.cwd() == ROOT


@pytest.mark.parametrize("home", [None, "/"])
def test_a_worker_without_its_checkout_says_so(
    home: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    if home is None:
        monkeypatch.delenv(CHECKOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(CHECKOUT_ENV, home)
    with pytest.raises(ConfigError, match=CHECKOUT_ENV):
        enter_checkout()


def test_every_entrypoint_is_a_module_path(deployments: dict[str, dict[str, Any]]) -> None:
    for name, deployment in deployments.items():
        assert _flow_of(deployment["entrypoint"]), name


def test_a_worker_without_a_checkout_runs_from_the_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a process worker starts each run in a throwaway folder
    monkeypatch.delenv(CHECKOUT_ENV, raising=False)
    monkeypatch.setenv(CONFIG_DIR_ENV, str(FEEDS_DIR))
    monkeypatch.setenv(LEDGER_ENVS[0], "postgresql://ledger.example/batchbridge")
    assert enter_checkout() == {}
    assert Path.cwd() == tmp_path  # stays put: nothing is read from a checkout


@pytest.mark.parametrize(
    ("config_dir", "ledger", "named"),
    [
        ("feeds", {LEDGER_ENVS[0]: "sqlite:////srv/ledger.db"}, CONFIG_DIR_ENV),
        ("/nonexistent/feeds", {LEDGER_ENVS[0]: "sqlite:////srv/ledger.db"}, CONFIG_DIR_ENV),
        (str(FEEDS_DIR), {}, LEDGER_ENVS[0]),
        (str(FEEDS_DIR), {LEDGER_ENVS[1]: "var"}, LEDGER_ENVS[1]),
    ],
)
def test_a_worker_without_a_checkout_needs_its_feeds_and_ledger(
    config_dir: str,
    ledger: dict[str, str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Relative settings would resolve in the run's throwaway folder: a ledger made
    # there is deleted with it.
    monkeypatch.chdir(tmp_path)
    for variable in (CHECKOUT_ENV, *LEDGER_ENVS):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(CONFIG_DIR_ENV, config_dir)
    for variable, value in ledger.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=named):
        enter_checkout()


def test_check_names_the_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "prefect.yaml"
    stale.write_text("deployments: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="out of date") as caught:
        check_prefect_file(build_plan(FEEDS_DIR), stale)
    assert caught.value.reason == "deployments_out_of_date"
    assert "+  - name: lab_results-nightly" in str(caught.value)  # the diff says what


def test_a_per_feed_flow_is_one_table_row() -> None:
    checks = FeedDeployment(
        suffix="health",
        entrypoint="batchbridge.flows.nightly.nightly_feed",
        description="Health of {feed} ({tenant}).",
        schedules=lambda config: [{"cron": "0 9 * * *", "timezone": config.timezone}],
        tenant_bound=False,
    )
    plan = build_plan(FEEDS_DIR, feed_deployments=[checks], fixed_deployments=[])
    data = yaml.safe_load(plan.text)
    entry, northwind, roster = data["deployments"]
    assert northwind["name"] == "northwind_lab_hl7-health"
    assert roster["name"] == "patient_roster-health"
    assert entry["name"] == "lab_results-health"
    assert entry["description"] == "Health of lab_results (acme_lab)."
    assert entry["parameters"] == {"feed": "lab_results"}
    assert entry["work_pool"] == {"name": WORK_POOL}  # not behind the tenant's nightly run
    assert plan.tenant_queues == {}


def test_cli_check_exits_2_while_the_file_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchbridge.cli.app import main

    monkeypatch.chdir(ROOT)
    assert main(["deploy", "--check"]) == 0
    stale = tmp_path / "prefect.yaml"
    stale.write_text("deployments: []\n", encoding="utf-8")
    assert main(["deploy", "--check", "--prefect-file", str(stale)]) == 2
    assert "batchbridge deploy" in capsys.readouterr().err
    assert main(["deploy", "--prefect-file", str(stale)]) == 0  # regenerates it
    assert main(["deploy", "--check", "--prefect-file", str(stale)]) == 0


def test_a_tenant_limit_other_than_the_default_is_applied_and_shown() -> None:
    default = build_plan(FEEDS_DIR)
    others = {"tenant-northwind_lab": 1, "tenant-riverside_clinic": 1}
    assert default.tenant_queues == {"tenant-acme_lab": 1, **others}
    wider = build_plan(FEEDS_DIR, tenant_limits={"acme_lab": 3})
    assert wider.tenant_queues == {"tenant-acme_lab": 3, **others}
    assert "at most 3 flow run(s)" in wider.text
