"""deployments/prefect.yaml: a nightly deployment per feed, on the feed's schedule; the replay."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import Flow

from batchbridge.config import list_feeds, load_feed

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
    path, _, name = entrypoint.partition(":")
    assert (ROOT / path).is_file(), f"entrypoint {path} does not exist"
    module = path.removeprefix("src/").removesuffix(".py").replace("/", ".")
    found = getattr(importlib.import_module(module), name)
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
        assert config.schedule is not None, f"feed {feed} has no schedule"
        (schedule,) = deployment["schedules"]
        assert schedule["cron"] == config.schedule.cron
        assert schedule["timezone"] == config.schedule.timezone


def test_replay_deployment_has_no_schedule(deployments: dict[str, dict[str, Any]]) -> None:
    replay = deployments["replay-quarantine"]
    assert _flow_of(replay["entrypoint"]).name == "replay-quarantine"
    assert not replay.get("schedules")
    assert not replay.get("parameters")  # requested_by must be given by the person running it
