"""consent_event.campaign_id: the campaign whose unsubscribe link was used (reports)

Revision ID: 0901
Revises: 0701
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0901'
down_revision: str | None = '0701'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('consent_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('campaign_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_consent_event_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_consent_event_campaign_id_campaign'), 'campaign',
                                    ['campaign_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('consent_event', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_consent_event_campaign_id_campaign'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_consent_event_campaign_id'))
        batch_op.drop_column('campaign_id')
