"""consent_event.detail: the reason another tool's export gives for an event

Revision ID: 0602
Revises: 0601
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0602'
down_revision: str | None = '0601'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('consent_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('consent_event', schema=None) as batch_op:
        batch_op.drop_column('detail')
