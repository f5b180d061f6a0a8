"""Goal estimates: a provisional window's value estimated from model scores, and its error once mature."""

import sqlalchemy as sa
from alembic import op

from monitor import store

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "monitor_goal_estimates",
        sa.Column("goal", sa.String(length=200), nullable=False),
        sa.Column("size_seconds", sa.Integer(), nullable=False),
        sa.Column("window_start", store.UTCDateTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("numerator", sa.Float(), nullable=True),
        sa.Column("denominator", sa.Float(), nullable=True),
        sa.Column("variance", sa.Float(), nullable=True),
        sa.Column("ci_low", sa.Float(), nullable=True),
        sa.Column("ci_high", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("realized", sa.Float(), nullable=True),
        sa.Column("error", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("goal", "size_seconds", "window_start"),
    )


def downgrade():
    op.drop_table("monitor_goal_estimates")
