"""A real PostgreSQL 15 (tests/pg_server.py) as Optuna's RDB storage: a study is created on it and
two processes add trials at the same time; none is lost or numbered twice."""

from __future__ import annotations

import subprocess

import pytest

from pg_server import pg_server, run_optuna_workers

pytestmark = pytest.mark.e2e


def check_study(url: str, study: str, numbers: list[list[int]], tags, per_worker: int) -> None:
    import optuna
    flat = sorted(n for ns in numbers for n in ns)
    total = per_worker * len(tags)
    assert flat == list(range(total)), numbers                 # none lost, none twice
    trials = optuna.load_study(study_name=study,
                               storage=optuna.storages.RDBStorage(url)).get_trials()
    assert len(trials) == total
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["worker"] for t in trials} == set(tags)


def test_optuna_rdb_storage_on_postgresql_with_two_concurrent_processes():
    import optuna
    with pg_server() as pg:
        assert pg.url.startswith("postgresql+psycopg://")
        optuna.create_study(study_name="s", storage=optuna.storages.RDBStorage(pg.url))
        tags = ("a", "b")
        numbers = run_optuna_workers(
            lambda argv: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True), pg.url, "s", 6, tags)
        check_study(pg.url, "s", numbers, tags, 6)
        folder = pg.folder
    assert not folder.exists()
