"""Job runs: every run of `warehouse export`, `warehouse retain` and `warehouse verify-lake`, with its result
(issue 26 items 7 and 8).

`export_runs` and `retention_runs` record what was exported and dropped, not that a job ran: a retain
that had nothing to drop, or an export that failed half way, leaves no row there. `job_runs` is one
row per run that finished (successfully or not): what a collector's /metrics shows as the last success
and result of each job, and what `warehouse check` reads. Append-only like the other records;
`warehouse_maintainer` (who runs the jobs) inserts, every role reads (the collector's /metrics reads
it as `warehouse_writer`).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

JOBS = ("export", "retain", "verify-lake")  # frozen with this migration


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _if_role(role: str, statement: str) -> None:
    _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN {statement}; END IF; END $$")


def upgrade() -> None:
    jobs = ", ".join(f"'{job}'" for job in JOBS)
    _sql(f"CREATE TABLE job_runs (id bigserial PRIMARY KEY, job text NOT NULL CONSTRAINT job_runs_job_check"
         f" CHECK (job IN ({jobs})), started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL DEFAULT now(),"
         " ok boolean NOT NULL, detail text, host text)")
    _sql("CREATE INDEX job_runs_job_finished_at_idx ON job_runs (job, finished_at)")
    _sql("CREATE TRIGGER job_runs_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON job_runs"
         " FOR EACH STATEMENT EXECUTE FUNCTION warehouse_reject_change()")
    _sql("CREATE TRIGGER job_runs_append_only_rows BEFORE UPDATE OR DELETE ON job_runs"
         " FOR EACH ROW EXECUTE FUNCTION warehouse_reject_change()")
    _if_role("warehouse_reader", "GRANT SELECT ON job_runs TO warehouse_reader")
    _if_role("warehouse_writer", "GRANT SELECT ON job_runs TO warehouse_writer")
    _if_role("warehouse_maintainer", "GRANT SELECT, INSERT ON job_runs TO warehouse_maintainer;"
                                     " GRANT USAGE ON SEQUENCE job_runs_id_seq TO warehouse_maintainer")


def downgrade() -> None:
    _sql("DROP TABLE IF EXISTS job_runs")
