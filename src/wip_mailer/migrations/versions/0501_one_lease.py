"""One lease table for the scheduler and every campaign (with fencing tokens)

Revision ID: 0501
Revises: 0401
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wip_mailer.db

revision: str = '0501'
down_revision: str | None = '0401'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Leases are short-lived: an upgrade runs with no sender or scheduler alive, so the old
    # rows carry nothing to keep.
    op.drop_table('scheduler_lease')
    op.create_table('lease',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('token', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('acquired_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('lease_owner')


def downgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_owner', sqlmodel.sql.sqltypes.AutoString(length=120),
                                      nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', wip_mailer.db.UTCDateTime(timezone=True),
                                      nullable=True))
    op.drop_table('lease')
    op.create_table('scheduler_lease',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('acquired_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', wip_mailer.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
