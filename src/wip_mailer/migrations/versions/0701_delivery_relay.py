"""delivery.relay: which SMTP relay accepted each message (several relays with failover);
ix_delivery_claim: claims read the lowest ids of a state in order (workers, large campaigns)

Revision ID: 0701
Revises: 0602
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0701'
down_revision: str | None = '0602'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('relay', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True))
        batch_op.create_index('ix_delivery_claim', ['campaign_id', 'state', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_claim')
        batch_op.drop_column('relay')
