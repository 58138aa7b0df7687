"""Schedule: scheduled jobs, scheduler lease, APScheduler job store

Revision ID: 0401
Revises: 0301
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wip_mailer.db

revision: str = '0401'
down_revision: str | None = '0301'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The table of APScheduler's SQLAlchemyJobStore, with the job store's own column types.
    op.create_table('apscheduler_jobs',
    sa.Column('id', sa.Unicode(length=191), nullable=False),
    sa.Column('next_run_time', sa.Float(precision=25), nullable=True),
    sa.Column('job_state', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('apscheduler_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apscheduler_jobs_next_run_time'), ['next_run_time'], unique=False)

    op.create_table('scheduler_lease',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('acquired_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('scheduled_job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('edition_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('run_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cron', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
    sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('lists', sa.JSON(), nullable=False),
    sa.Column('segment', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('notify', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('edition_status_before', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('run_count', sa.Integer(), nullable=False),
    sa.Column('last_run_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
    sa.Column('created_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['edition_id'], ['edition.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('scheduled_job', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scheduled_job_edition_id'), ['edition_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_scheduled_job_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('scheduled_job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scheduled_job_status'))
        batch_op.drop_index(batch_op.f('ix_scheduled_job_edition_id'))

    op.drop_table('scheduled_job')
    op.drop_table('scheduler_lease')
    with op.batch_alter_table('apscheduler_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apscheduler_jobs_next_run_time'))

    op.drop_table('apscheduler_jobs')
