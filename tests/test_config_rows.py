"""Config rows are recorded by one function, for review (save, merge) and runs (launch): one row per commit and path."""

from __future__ import annotations

from sqlalchemy import func, select

from backend.config import TrainConfig
from backend.config_rows import record_config
from backend.store.models import Config
from tests.runs_fixtures import approved_merge


def test_one_row_per_commit_and_path_and_a_late_change_request_is_learnt(any_db_env):
    env = any_db_env
    cr, merge = approved_merge(env, "rows")
    raw = env.ws.repo.read(merge, "configs/rows.yaml")
    config = TrainConfig.parse(raw, "configs/rows.yaml")
    with env.ws.store.session() as s:
        recorded = s.scalar(select(Config).where(Config.commit == merge))
        assert (recorded.path, recorded.change_request_id) == ("configs/rows.yaml", cr)
        assert recorded.config_hash == config.config_hash() and recorded.params == config.normalised_args()
        again = record_config(s, merge, "configs/rows.yaml", config, "sha256:" + "0" * 64, None)
        assert again.id == recorded.id and again.change_request_id == cr  # the first record stands
        # a commit launched by override before anyone knew its change request
        main = env.ws.repo.sync_main()
        early = record_config(s, main, "configs/example.yaml", config, recorded.dataset_version, None)
        assert early.id is not None and early.change_request_id is None
        late = record_config(s, main, "configs/example.yaml", config, recorded.dataset_version, cr)
        assert late.id == early.id and late.change_request_id == cr
        count = s.scalar(select(func.count()).select_from(Config).where(Config.commit.in_([merge, main])))
    assert count == 2
