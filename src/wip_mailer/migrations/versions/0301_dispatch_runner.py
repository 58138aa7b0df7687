"""Dispatch runner: frozen message per campaign, first attempt per delivery, one unfinished
campaign per edition

Revision ID: 0301
Revises: 0201
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import wip_mailer.db

revision: str = '0301'
down_revision: str | None = '0201'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('sending', 'paused')"


def upgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_attempt_at', wip_mailer.db.UTCDateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('body_html', sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('body_text', sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                                      server_default=''))
        batch_op.create_index('uq_campaign_active_edition', ['edition_id'], unique=True,
                              sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))


def downgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_index('uq_campaign_active_edition')
        batch_op.drop_column('body_text')
        batch_op.drop_column('body_html')
        batch_op.drop_column('subject')
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_column('first_attempt_at')
