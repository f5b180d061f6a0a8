"""The demo world: a deterministic generator of realistic source tables with planted episodes.

Three businesses share one database:

* a messenger whose spam classifier scores every message (``messages``), whose users see the
  messages that were not blocked (``message_views``) and report or moderate them later
  (``spam_labels``);
* a consumer lender whose credit-scoring model scores every application in 15-minute batches
  (``loan_applications``), which issues loans (``loans``) and learns about defaults months later
  (``loan_defaults``; the model's own early-delinquency labels in ``credit_labels``);
* a feed whose users spend time in sessions (``users``, ``user_sessions``) and whose engagement
  model predicts each active user's minutes of the day (``engagement_predictions``), with the
  actual minutes computed by a nightly job (``engagement_actuals``).

The world spans ``[DEMO_START, DEMO_START + days)`` and is a snapshot as of ``as_of`` (by default
the end of the world): nothing that happens after ``as_of`` — a label, a view, a default — is in
the tables. All timestamps are naive UTC (SQLAlchemy ``DateTime``): SQLite stores them as
``'YYYY-MM-DD HH:MM:SS.ffffff'`` text, PostgreSQL as ``timestamp``.

:func:`generate` writes the tables (drop and recreate) and returns the manifest of planted
episodes; :func:`demo_config` returns the YAML of a config that watches the world.
"""
from __future__ import annotations

import hashlib
import io
import shutil
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

DEMO_START = datetime(2026, 9, 1, tzinfo=UTC)
GOALS = ("spam_exposure_rate", "large_loan_default_rate", "minutes_per_active_user")
MODELS = ("spam_classifier", "credit_scoring", "engagement_model")

# Planted episodes, in days since DEMO_START (2026-09-01 is a Tuesday; weekly windows start on
# Monday, so day 34 = Monday 2026-10-05 and the campaign fills exactly one review week).
CAMPAIGN_DAYS = (34, 41)          # [start, end): spam campaign that slips past the classifier
POLICY_DAY = 27                   # Monday 2026-09-28: credit policy raises cash-loan limits
ENGAGEMENT_BASE = 80.0            # minutes per active user-day on DEMO_START
ENGAGEMENT_GROWTH = 0.45          # minutes per week: too slow for 100 by the deadline
LARGE_LOAN_RUB = 1_000_000
LARGE_LOAN_PD = 0.00035           # lifetime default probability of a large loan, on average
LARGE_LOAN_DEFAULT_PER_PD = 0.02  # a large loan's lifetime default probability: its PD score times this
REFERENCE_DAYS = 14               # fixed drift reference: the first two weeks
DEADLINE = date(2027, 3, 31)
OUTAGE_DAY = 48                   # the app's session log and the engagement model's log lose a whole day
LABEL_BREAK_DAYS = (44, 46)       # [start, end): a new moderation tool writes spam labels as 3, not 1

_US = 1_000_000                   # microseconds per second
_DAY = 86_400 * _US
_HOUR = 3_600 * _US
_EPOCH64 = np.datetime64("2026-09-01T00:00:00", "us")

# Share of activity by UTC hour (most users live at UTC+3: quiet nights, evening peak).
_DIURNAL = np.array([1.0, 0.6, 0.4, 0.4, 1.2, 2.6, 3.6, 3.8, 3.7, 3.9, 4.2, 4.0,
                     3.8, 3.9, 4.3, 5.0, 5.8, 6.4, 6.6, 6.0, 4.8, 3.2, 2.0, 1.4])
_DIURNAL = _DIURNAL / _DIURNAL.sum()
_DAYTIME = np.array([0.1, 0.05, 0.05, 0.2, 1.0, 3.0, 4.5, 5.0, 5.0, 5.0, 5.0, 5.0,
                     5.0, 5.0, 4.8, 4.5, 4.0, 3.2, 2.2, 1.2, 0.6, 0.3, 0.2, 0.1])
_DAYTIME = _DAYTIME / _DAYTIME.sum()

_REGIONS = ["Moscow", "Saint Petersburg", "Moscow Oblast", "Krasnodar Krai", "Sverdlovsk Oblast",
            "Tatarstan", "Novosibirsk Oblast", "Bashkortostan", "Rostov Oblast", "Other"]
_REGION_P = np.array([0.20, 0.09, 0.08, 0.06, 0.05, 0.05, 0.04, 0.04, 0.04, 0.35])


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

def _schema() -> sa.MetaData:
    md = sa.MetaData()
    C, T = sa.Column, sa.Table
    big, i, f, s, ts, dt = sa.BigInteger, sa.Integer, sa.Float, sa.String, sa.DateTime, sa.Date
    # BIGINT keys; on SQLite an INTEGER PRIMARY KEY is the rowid itself (one B-tree, faster loads)
    key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    small = sa.SmallInteger
    T("users", md,
      C("user_id", key, primary_key=True, autoincrement=False),
      C("signed_up_at", ts, nullable=False),
      C("platform", s(16), nullable=False),
      C("region", s(32), nullable=False),
      C("age", i, nullable=False),
      comment="Users of the messenger and feed.")
    T("messages", md,
      C("message_id", key, primary_key=True, autoincrement=False),
      C("sender_id", big, nullable=False),
      C("recipient_id", big, nullable=False),
      C("sent_at", ts, nullable=False),
      C("predicted_at", ts, nullable=False),
      C("client", s(16), nullable=False),
      C("sender_country", s(2), nullable=False),
      C("sender_age_days", f, nullable=True),
      C("links_count", i, nullable=False),
      C("text_length", i, nullable=False),
      C("spam_score", f, nullable=False),
      C("is_blocked", small, nullable=False),
      C("model_version", s(16), nullable=False),
      sa.Index("ix_messages_predicted_at", "predicted_at"),
      comment="Every message with the spam classifier's score; is_blocked=1 was never delivered.")
    T("message_views", md,
      C("view_id", key, primary_key=True, autoincrement=False),
      C("message_id", big, nullable=False),
      C("user_id", big, nullable=False),
      C("viewed_at", ts, nullable=False),
      sa.Index("ix_message_views_viewed_at", "viewed_at", "user_id"),
      sa.Index("ix_message_views_message_id", "message_id"),
      comment="A recipient opened a delivered (not blocked) message.")
    T("spam_labels", md,
      C("message_id", key, primary_key=True, autoincrement=False),
      C("is_spam", small, nullable=False),
      C("label_source", s(16), nullable=False),
      C("labeled_at", ts, nullable=False),
      comment="Ground truth from user reports, moderators and the nightly review; within 2 days.")
    T("user_sessions", md,
      C("session_id", key, primary_key=True, autoincrement=False),
      C("user_id", big, nullable=False),
      C("started_at", ts, nullable=False),
      C("session_date", dt, nullable=False),
      C("duration_minutes", f, nullable=False),
      C("platform", s(16), nullable=False),
      sa.Index("ix_user_sessions_started_at", "started_at", "user_id"),
      comment="App sessions; session_date is the UTC date of started_at.")
    T("engagement_predictions", md,
      C("prediction_id", key, primary_key=True, autoincrement=False),
      C("user_id", big, nullable=False),
      C("activity_date", dt, nullable=False),
      C("predicted_at", ts, nullable=False),
      C("predicted_minutes", f, nullable=False),
      C("friends_count", i, nullable=False),
      C("sessions_7d", i, nullable=False),
      C("age", i, nullable=False),
      C("platform", s(16), nullable=False),
      C("region", s(32), nullable=False),
      C("model_version", s(16), nullable=False),
      sa.Index("ix_engagement_predictions_predicted_at", "predicted_at"),
      comment="The engagement model's prediction of a user's minutes, made at the day's first session.")
    T("engagement_actuals", md,
      C("prediction_id", key, primary_key=True, autoincrement=False),
      C("user_id", big, nullable=False),
      C("activity_date", dt, nullable=False),
      C("actual_minutes", f, nullable=False),
      C("computed_at", ts, nullable=False),
      comment="Actual minutes of the user-day (sum of its sessions), computed nightly.")
    T("loan_applications", md,
      C("application_id", key, primary_key=True, autoincrement=False),
      C("applicant_id", big, nullable=False),
      C("applied_at", ts, nullable=False),
      C("scored_at", ts, nullable=False),
      C("product", s(16), nullable=False),
      C("amount_rub", big, nullable=False),
      C("term_months", i, nullable=False),
      C("income_rub", big, nullable=False),
      C("age", i, nullable=False),
      C("region", s(32), nullable=False),
      C("pd_score", f, nullable=False),
      C("predicted_default", small, nullable=False),
      C("decision", s(10), nullable=False),
      C("model_version", s(16), nullable=False),
      sa.Index("ix_loan_applications_scored_at", "scored_at"),
      comment="Loan applications with the credit model's probability of default (batch-scored).")
    T("loans", md,
      C("loan_id", key, primary_key=True, autoincrement=False),
      C("application_id", big, nullable=False, unique=True),
      C("customer_id", big, nullable=False),
      C("issued_at", ts, nullable=False),
      C("product", s(16), nullable=False),
      C("amount_rub", big, nullable=False),
      C("term_months", i, nullable=False),
      C("interest_rate", f, nullable=False),
      sa.Index("ix_loans_issued_at", "issued_at", "amount_rub"),
      comment="Issued loans; amount in whole roubles.")
    T("loan_defaults", md,
      C("loan_id", key, primary_key=True, autoincrement=False),
      C("defaulted_at", ts, nullable=False),
      C("days_past_due", i, nullable=False),
      C("outstanding_rub", big, nullable=False),
      sa.Index("ix_loan_defaults_defaulted_at", "defaulted_at"),
      comment="A loan defaults once a payment is 90 days past due: 120 days after issue at the earliest.")
    T("credit_labels", md,
      C("application_id", key, primary_key=True, autoincrement=False),
      C("loan_id", big, nullable=False),
      C("is_bad", small, nullable=False),
      C("labeled_at", ts, nullable=False),
      comment="The credit model's target: 30+ days past due within 90 days on book; known at 90 days.")
    return md


SCHEMA = _schema()
TABLES = tuple(SCHEMA.tables)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _times_in_days(rng: np.random.Generator, day: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Microsecond offsets from DEMO_START: a time of day from `profile` on each given day."""
    hour = rng.choice(24, size=day.size, p=profile)
    within = (rng.random(day.size) * _HOUR).astype(np.int64)
    return day.astype(np.int64) * _DAY + hour.astype(np.int64) * _HOUR + within


def _poisson_per_day(rng: np.random.Generator, rate: np.ndarray) -> np.ndarray:
    """Day index of each event for a Poisson count per day."""
    counts = rng.poisson(rate)
    return np.repeat(np.arange(rate.size), counts)


def _lognormal_median(rng: np.random.Generator, median: float | np.ndarray, sigma: float | np.ndarray,
                      size: int) -> np.ndarray:
    return np.exp(np.log(median) + sigma * rng.standard_normal(size))


def _pick(rng: np.random.Generator, values: list[str], p, size: int) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=size, p=p / p.sum())]


def _order(*keys: np.ndarray) -> np.ndarray:
    """Stable sort order by the keys (first key most significant)."""
    return np.lexsort(tuple(reversed(keys)))


def _take(cols: dict[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in cols.items()}


def _day_iso(day: float) -> str:
    return (DEMO_START + timedelta(days=day)).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# The three businesses
# --------------------------------------------------------------------------------------------

def _people(rng: np.random.Generator, days: int, scale: float, as_of_us: int) -> tuple[dict, dict]:
    """Users, their sessions, the engagement model's predictions and the actual minutes."""
    n = max(40, round(2000 * scale))
    user_id = np.arange(1, n + 1, dtype=np.int64)
    p_active = rng.beta(6.0, 2.0, n)                       # mean 0.75: ~1,500 of 2,000 active a day
    latent = np.exp(0.35 * rng.standard_normal(n) + 0.8 * (p_active - 0.75))
    platform = _pick(rng, ["android", "ios", "web"], [0.55, 0.35, 0.10], n)
    region = _pick(rng, _REGIONS, _REGION_P, n)
    age = np.clip(np.round(18 + rng.gamma(3.0, 6.5, n)), 18, 80).astype(np.int64)
    friends = np.round(_lognormal_median(rng, 60, 0.9, n)).astype(np.int64)
    signup = -(np.round(_lognormal_median(rng, 500, 1.0, n) * _DAY)).astype(np.int64)
    users = {"user_id": user_id, "signed_up_at": signup, "platform": platform, "region": region, "age": age}

    # active user-days, ordered by day then user
    active = rng.random((days, n)) < p_active
    ud_day, ud_user = np.nonzero(active)
    k = ud_day.size
    # minutes of the day: the user's level x slow growth x day-to-day noise; calibrated so that the
    # expected mean over active user-days is ENGAGEMENT_BASE on day 0
    level = ENGAGEMENT_BASE * latent / (np.sum(p_active * latent) / np.sum(p_active))
    growth = 1.0 + (ENGAGEMENT_GROWTH / ENGAGEMENT_BASE) * (ud_day / 7.0)
    sigma = 0.30
    total = level[ud_user] * growth * np.exp(sigma * rng.standard_normal(k) - sigma ** 2 / 2)

    n_sess = 1 + rng.poisson(1.4, k)
    s_ud = np.repeat(np.arange(k), n_sess)
    s_start = _times_in_days(rng, ud_day[s_ud], _DIURNAL)
    share = rng.gamma(1.5, 1.0, s_ud.size)
    share = share / np.bincount(s_ud, weights=share, minlength=k)[s_ud]
    s_dur = np.maximum(np.round(total[s_ud] * share, 2), 0.05)
    s_user = user_id[ud_user[s_ud]]

    glob = _order(s_start, s_user)
    sessions = {
        "session_id": np.arange(1, s_ud.size + 1, dtype=np.int64),
        "user_id": s_user[glob],
        "started_at": s_start[glob],
        "session_date": ud_day[s_ud][glob],
        "duration_minutes": s_dur[glob],
        "platform": platform[ud_user[s_ud]][glob],
    }
    # per user-day: first session start and actual minutes (sum of the rounded durations)
    first = np.full(k, np.iinfo(np.int64).max)
    np.minimum.at(first, s_ud, s_start)
    actual = np.round(np.bincount(s_ud, weights=s_dur, minlength=k), 2)

    # the engagement model: trained before the world began, it knows each user's level but not
    # the growth; features are user attributes and counts that do not trend
    user_bias = np.exp(0.2 * rng.standard_normal(n) - 0.02)
    predicted = np.round(level[ud_user] * user_bias[ud_user] * np.exp(0.1 * rng.standard_normal(k) - 0.005), 2)
    sessions_7d = rng.poisson(7 * p_active[ud_user] * 2.4)
    pred_at = first + (rng.lognormal(np.log(0.2), 0.5, k) * _US).astype(np.int64)
    order = _order(pred_at, ud_user)
    pred = {
        "prediction_id": np.arange(1, k + 1, dtype=np.int64),
        "user_id": user_id[ud_user][order],
        "activity_date": ud_day[order],
        "predicted_at": pred_at[order],
        "predicted_minutes": predicted[order],
        "friends_count": friends[ud_user][order],
        "sessions_7d": sessions_7d[order],
        "age": age[ud_user][order],
        "platform": platform[ud_user][order],
        "region": region[ud_user][order],
        "model_version": np.full(k, "eng-2026.08", dtype=object),
    }
    computed = (ud_day[order].astype(np.int64) + 1) * _DAY + 2 * _HOUR + (rng.random(k) * 30 * 60 * _US).astype(np.int64)
    actuals = {
        "prediction_id": pred["prediction_id"],
        "user_id": pred["user_id"],
        "activity_date": pred["activity_date"],
        "actual_minutes": actual[order],
        "computed_at": computed,
    }
    keep = actuals["computed_at"] < as_of_us
    actuals = _take(actuals, keep)
    # sessions and predictions all lie inside the world, hence before as_of
    world = {"users": users, "user_sessions": sessions, "engagement_predictions": pred, "engagement_actuals": actuals}
    ctx = {"n_users": n, "p_active": p_active, "user_id": user_id,
           # sessions sorted by (user, start) for the view lookup
           "by_user": _order(sessions["user_id"], sessions["started_at"])}
    return world, ctx


def _messenger(rng: np.random.Generator, days: int, scale: float, as_of_us: int, people: dict, ctx: dict) -> dict:
    """Messages with the spam classifier's scores, views of delivered messages, late labels."""
    n_users, p_active, user_id = ctx["n_users"], ctx["p_active"], ctx["user_id"]
    c0, c1 = CAMPAIGN_DAYS
    day_idx = np.arange(days)

    # ordinary traffic: ~4,000 messages a day, 2.5 % of them spam from throwaway accounts
    m_day = _poisson_per_day(rng, np.full(days, 4000.0 * scale))
    m = m_day.size
    kind = np.where(rng.random(m) < 0.025, 1, 0)          # 0 ham, 1 ordinary spam
    # the campaign: ~260 extra spam messages a day from hijacked old accounts in new countries,
    # written to look like ordinary mail; the classifier lets about a quarter of them through
    camp_rate = np.where((day_idx >= c0) & (day_idx < c1), 260.0 * scale, 0.0)
    c_day = _poisson_per_day(rng, camp_rate)
    day = np.concatenate([m_day, c_day])
    kind = np.concatenate([kind, np.full(c_day.size, 2)])
    n = day.size
    ham, spam, camp = kind == 0, kind == 1, kind == 2
    like_ham = ham | camp                                 # the campaign copies ordinary mail

    sent = _times_in_days(rng, day, _DIURNAL)
    weights = p_active / p_active.sum()
    sender = np.where(like_ham, user_id[rng.choice(n_users, n, p=weights)],
                      5_000_000 + rng.integers(0, 20_000, n))
    recipient = np.where(ham, user_id[rng.choice(n_users, n, p=weights)],
                         user_id[rng.integers(0, n_users, n)])       # spammers mail everyone
    same = sender == recipient
    recipient[same] = user_id[(recipient[same] % n_users)]          # nobody writes to themselves

    client = np.where(spam, _pick(rng, ["web", "ios", "android", "api"], [0.25, 0.1, 0.15, 0.5], n),
                      _pick(rng, ["web", "ios", "android", "api"], [0.30, 0.30, 0.35, 0.05], n))
    country = np.where(ham, _pick(rng, ["RU", "KZ", "BY", "UZ", "AM", "GE", "DE", "US", "TR"],
                                  [0.62, 0.10, 0.07, 0.06, 0.04, 0.03, 0.03, 0.03, 0.02], n),
                       np.where(spam, _pick(rng, ["RU", "US", "CN", "TR", "IN"], [0.3, 0.2, 0.2, 0.15, 0.15], n),
                                _pick(rng, ["ID", "VN"], [0.7, 0.3], n)))
    sender_age = np.where(like_ham, _lognormal_median(rng, 700, 1.0, n), _lognormal_median(rng, 3, 1.0, n))
    sender_age = np.round(sender_age, 1)
    sender_age[rng.random(n) < 0.02] = np.nan             # unknown for some external senders
    links = np.where(ham, rng.poisson(0.35, n),
                     np.where(spam, 1 + rng.poisson(1.2, n), 3 + rng.poisson(2.5, n)))
    text_len = np.where(spam, _lognormal_median(rng, 300, 0.6, n), _lognormal_median(rng, 120, 0.9, n))
    text_len = np.clip(np.round(text_len), 1, 4096).astype(np.int64)
    hard_ham = rng.random(n) < 0.03                       # newsletters and the like
    score = np.where(ham, np.where(hard_ham, rng.beta(2, 6, n), rng.beta(1, 30, n)),
                     np.where(spam, rng.beta(7.0, 1.4, n), rng.beta(4, 2.5, n)))
    score = np.round(score, 6)
    blocked = (score >= 0.5).astype(np.int64)
    predicted = sent + (rng.lognormal(np.log(0.25), 0.6, n) * _US).astype(np.int64)

    glob = _order(sent, kind)
    msg_id = np.empty(n, dtype=np.int64)
    msg_id[glob] = np.arange(1, n + 1)
    messages = {
        "message_id": msg_id, "sender_id": sender, "recipient_id": recipient, "sent_at": sent,
        "predicted_at": predicted, "client": client, "sender_country": country,
        "sender_age_days": sender_age, "links_count": links.astype(np.int64), "text_length": text_len,
        "spam_score": score, "is_blocked": blocked, "model_version": np.full(n, "spam-2026.07", dtype=object),
    }
    messages = _take(messages, glob)
    kind = kind[glob]

    # views: a delivered message is opened (85 %) in the recipient's first session that starts
    # after it arrived, within 48 hours; the campaign's messages were purged from inboxes when it
    # was stopped, so none of them is opened after the campaign ended
    sess = people["user_sessions"]
    bu = ctx["by_user"]
    s_user, s_start, s_dur = sess["user_id"][bu], sess["started_at"][bu], sess["duration_minutes"][bu]
    span = (days + 3) * _DAY
    key = s_user * span + s_start
    q = messages["recipient_id"] * span + messages["sent_at"]
    j = np.searchsorted(key, q, side="left")
    jj = np.minimum(j, key.size - 1)
    found = (j < key.size) & (s_user[jj] == messages["recipient_id"]) & (s_start[jj] < messages["sent_at"] + 48 * _HOUR)
    opened = found & (messages["is_blocked"] == 0) & (rng.random(n) < 0.85)
    viewed_at = s_start[jj] + (rng.random(n) * s_dur[jj] * 60 * _US).astype(np.int64)
    opened &= viewed_at < as_of_us
    opened &= ~((kind == 2) & (viewed_at >= c1 * _DAY))
    v_idx = np.nonzero(opened)[0]
    v_order = v_idx[_order(viewed_at[v_idx], messages["message_id"][v_idx])]
    views = {
        "view_id": np.arange(1, v_order.size + 1, dtype=np.int64),
        "message_id": messages["message_id"][v_order],
        "user_id": messages["recipient_id"][v_order],
        "viewed_at": viewed_at[v_order],
    }

    # labels: spam is reported or moderated within hours (always within 2 days); ordinary mail is
    # confirmed by the nightly review of the previous day's traffic
    is_spam = (kind != 0).astype(np.int64)
    spam_delay = np.minimum(rng.lognormal(np.log(2 * 3600), 1.2, n), 46 * 3600) * _US
    reported = opened & (is_spam == 1) & (rng.random(n) < 0.6)
    lab_spam = np.where(reported, viewed_at + (rng.lognormal(np.log(600), 1.0, n) * _US).astype(np.int64),
                        messages["predicted_at"] + spam_delay.astype(np.int64))
    lab_spam = np.minimum(lab_spam, messages["predicted_at"] + 47 * _HOUR)
    nightly = ((messages["predicted_at"] // _DAY) + 1) * _DAY + 3 * _HOUR + (rng.random(n) * 3 * _HOUR).astype(np.int64)
    labeled_at = np.where(is_spam == 1, lab_spam, nightly)
    source = np.where(is_spam == 0, "review", np.where(reported, "user_report", "moderation")).astype(object)
    keep = labeled_at < as_of_us
    labels = {"message_id": messages["message_id"][keep], "is_spam": is_spam[keep],
              "label_source": source[keep], "labeled_at": labeled_at[keep]}
    return {"messages": messages, "message_views": views, "spam_labels": labels}


def _lender(rng: np.random.Generator, days: int, scale: float, as_of_us: int) -> dict:
    """Loan applications scored by the credit model, issued loans, defaults, model labels."""
    a_day = _poisson_per_day(rng, np.full(days, 1200.0 * scale))
    n = a_day.size
    applied = _times_in_days(rng, a_day, _DAYTIME)
    after = a_day >= POLICY_DAY
    products = np.array(["cash", "pos", "refinance", "car"], dtype=object)
    prod_i = rng.choice(4, n, p=[0.50, 0.25, 0.15, 0.10])
    product = products[prod_i]
    # amounts: the policy change raises the cash-loan limit from 1.5 to 5 million roubles and
    # sends large pre-approved offers, so the amount mix moves up from POLICY_DAY on
    cash_med = np.where(after, 450_000.0, 250_000.0)
    cash_sig = np.where(after, 0.90, 0.70)
    cash_cap = np.where(after, 5_000_000, 1_500_000)
    med = np.select([prod_i == 0, prod_i == 1, prod_i == 2], [cash_med, 45_000.0, 550_000.0], 1_300_000.0)
    sig = np.select([prod_i == 0, prod_i == 1, prod_i == 2], [cash_sig, 0.6, 0.6], 0.45)
    cap = np.select([prod_i == 0, prod_i == 1, prod_i == 2], [cash_cap, 300_000, 3_000_000], 6_000_000)
    floor = np.select([prod_i == 0, prod_i == 1, prod_i == 2], [30_000, 5_000, 100_000], 300_000)
    step = np.where(prod_i == 1, 1_000, 5_000)
    amount = np.exp(np.log(med) + sig * rng.standard_normal(n))
    amount = (np.clip(np.round(amount / step) * step, floor, cap)).astype(np.int64)
    terms = [np.array([12, 24, 36, 48, 60]), np.array([6, 10, 12]), np.array([24, 36, 48, 60]), np.array([36, 48, 60, 84])]
    term = np.zeros(n, dtype=np.int64)
    for p_i, choices in enumerate(terms):
        sel = prod_i == p_i
        term[sel] = rng.choice(choices, sel.sum())
    income = _lognormal_median(rng, np.where(prod_i == 3, 110_000.0, 65_000.0), 0.55, n)
    income = (np.round(income / 1000) * 1000).astype(np.int64)
    age = np.clip(np.round(21 + rng.gamma(2.6, 7.0, n)), 21, 75).astype(np.int64)
    region = _pick(rng, _REGIONS, _REGION_P, n)
    # the model's probability of default; the true risk adds what the model does not see
    risk = rng.standard_normal(n)
    prod_off = np.array([0.2, 0.4, 0.0, -0.6])[prod_i]
    logit = (-3.4 + 0.9 * risk - 0.5 * np.log(income / 65_000) + 0.06 * np.log(amount / income / 3.0)
             + prod_off - 0.01 * (age - 35))
    pd_score = np.round(1 / (1 + np.exp(-logit)), 6)
    true_logit = logit + 0.6 * rng.standard_normal(n)
    predicted_default = (pd_score >= 0.10).astype(np.int64)
    large = amount > LARGE_LOAN_RUB
    large_pd_limit = np.where(after, 0.05, 0.03)          # the policy also relaxes the large-loan limit
    approved = (predicted_default == 0) & ~(large & (pd_score >= large_pd_limit)) & (amount <= 25 * income)
    scored = (applied // (15 * 60 * _US) + 1) * (15 * 60 * _US) + (rng.random(n) * 90 * _US).astype(np.int64)
    applicant = 1_000_000 + rng.choice(9_000_000, n, replace=False)

    glob = _order(applied, applicant)
    app_id = np.empty(n, dtype=np.int64)
    app_id[glob] = np.arange(1, n + 1)
    apps = {
        "application_id": app_id, "applicant_id": applicant, "applied_at": applied, "scored_at": scored,
        "product": product, "amount_rub": amount, "term_months": term, "income_rub": income, "age": age,
        "region": region, "pd_score": pd_score, "predicted_default": predicted_default,
        "decision": np.where(approved, "approved", "rejected").astype(object),
        "model_version": np.full(n, "pd-2026.06", dtype=object),
    }

    # loans: 80 % of approved applicants sign, usually within a day; 10 % take a smaller counter-offer
    signs = approved & (rng.random(n) < 0.8)
    issued = applied + (np.minimum(rng.lognormal(np.log(20), 0.8, n), 7 * 24) * _HOUR).astype(np.int64)
    signs &= issued < as_of_us
    counter = rng.random(n) < 0.10
    loan_amount = np.where(counter, np.maximum(np.round(amount * 0.7 / 5000) * 5000, 5000), amount).astype(np.int64)
    rate = np.round(9.5 + 120 * pd_score + np.where(prod_i == 1, 6.0, 0.0) + rng.normal(0, 0.8, n), 2)
    li = np.nonzero(signs)[0]
    li = li[_order(issued[li], app_id[li])]
    nl = li.size
    loans = {
        "loan_id": np.arange(1, nl + 1, dtype=np.int64), "application_id": app_id[li],
        "customer_id": applicant[li], "issued_at": issued[li], "product": product[li],
        "amount_rub": loan_amount[li], "term_months": term[li], "interest_rate": rate[li],
    }
    # lifetime default: a large loan (secured, collateral checked) defaults with its PD score times
    # LARGE_LOAN_DEFAULT_PER_PD (LARGE_LOAN_PD on average); others with their true risk.
    # Default = 90 days past due, so at the earliest 120 days after issue
    l_large = loan_amount[li] > LARGE_LOAN_RUB
    p_default = np.where(l_large, LARGE_LOAN_DEFAULT_PER_PD * pd_score[li], 1.4 / (1 + np.exp(-true_logit[li])))
    defaults = rng.random(nl) < p_default
    horizon = term[li] * 30.4 * _DAY
    d_at = issued[li] + (120 * _DAY + rng.exponential(200, nl) * _DAY).astype(np.int64)
    defaults &= (d_at < issued[li] + horizon) & (d_at < as_of_us)
    paid_share = np.clip((d_at - issued[li]) / horizon, 0, 1)
    outstanding = np.round(loan_amount[li] * (1 - 0.8 * paid_share) / 100) * 100
    di = np.nonzero(defaults)[0]
    di = di[_order(d_at[di], di)]
    loan_defaults = {
        "loan_id": loans["loan_id"][di], "defaulted_at": d_at[di],
        "days_past_due": np.full(di.size, 90, dtype=np.int64), "outstanding_rub": outstanding[di].astype(np.int64),
    }
    # the model's target: 30+ days past due within 90 days on book, known at 90 days on book. The
    # PD score is calibrated: the true probability is the score times a factor of mean 1 that the
    # model does not see (the same hidden risk as above), so the model ranks less well than it could
    # but its probabilities are right on average at every score. Drawn for every application, as if
    # issued: the truth the demo compares the estimates with; only issued loans get a label.
    hidden = (true_logit - logit) / 0.6
    p_bad_all = np.minimum(1.0, pd_score * np.exp(0.6 * hidden - 0.18))
    bad_all = (rng.random(n) < p_bad_all).astype(np.int64)
    bad = bad_all[li]
    lab_at = issued[li] + 90 * _DAY + 4 * _HOUR + (rng.random(nl) * 2 * _HOUR).astype(np.int64)
    keep = lab_at < as_of_us
    credit_labels = {"application_id": app_id[li][keep], "loan_id": loans["loan_id"][keep],
                     "is_bad": bad[keep], "labeled_at": lab_at[keep]}
    return {"loan_applications": _take(apps, glob), "loans": loans, "loan_defaults": loan_defaults,
            "credit_labels": credit_labels,
            "credit_truth": {"application_id": app_id, "is_bad": bad_all, "p_bad": p_bad_all},
            "large_loan_truth": {"loan_id": loans["loan_id"][l_large], "issued_at": issued[li][l_large],
                                 "p_default": p_default[l_large]}}


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _sqlite_column(values: np.ndarray, col: sa.Column, shift: timedelta = timedelta(0)) -> list:
    if isinstance(col.type, sa.DateTime):
        text = np.datetime_as_string(_epoch(shift) + values.astype("timedelta64[us]"), unit="us")
        raw = text.astype("S26").view(np.uint8).reshape(-1, 26).copy()
        raw[:, 10] = ord(" ")
        return raw.view("S26").ravel().astype(str).tolist()
    if isinstance(col.type, sa.Date):
        return np.datetime_as_string(_epoch_day(shift) + values.astype("timedelta64[D]"), unit="D").tolist()
    if values.dtype.kind == "f" and col.nullable:
        out = values.astype(object)
        out[np.isnan(values)] = None
        return out.tolist()
    return values.tolist()


def _epoch(shift: timedelta) -> np.datetime64:
    """The world's first moment as written: DEMO_START moved by `shift` (a living demo ends today)."""
    return _EPOCH64 + np.timedelta64(int(shift / timedelta(microseconds=1)), "us")


def _epoch_day(shift: timedelta) -> np.datetime64:
    return np.datetime64("2026-09-01", "D") + np.timedelta64(shift.days, "D")


def _generic_column(values: np.ndarray, col: sa.Column, shift: timedelta = timedelta(0)) -> list:
    if isinstance(col.type, sa.DateTime):
        return (_epoch(shift) + values.astype("timedelta64[us]")).tolist()
    if isinstance(col.type, sa.Date):
        return (_epoch_day(shift) + values.astype("timedelta64[D]")).tolist()
    return _sqlite_column(values, col, shift)


def _copy_psycopg2(conn: sa.Connection, table: sa.Table, data: dict[str, np.ndarray], shift: timedelta = timedelta(0)) -> None:
    """Bulk load through PostgreSQL's COPY (CSV: an unquoted empty field is NULL)."""
    import pandas as pd

    frame = pd.DataFrame({c.name: (_sqlite_column(data[c.name], c, shift) if isinstance(c.type, (sa.DateTime, sa.Date))
                                   else data[c.name]) for c in table.columns})
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False, na_rep="")
    buf.seek(0)
    cols = ", ".join(f'"{c.name}"' for c in table.columns)
    with conn.connection.driver_connection.cursor() as cur:
        cur.copy_expert(f'COPY "{table.name}" ({cols}) FROM STDIN WITH (FORMAT csv)', buf)


def _write(engine: sa.Engine, world: dict[str, dict[str, np.ndarray]], shift: timedelta = timedelta(0)) -> None:
    tables = [SCHEMA.tables[name] for name in TABLES]
    indexes = [ix for t in tables for ix in t.indexes]
    with engine.begin() as conn:
        SCHEMA.drop_all(conn, checkfirst=True)
        # create the tables without their secondary indexes: bulk loading is faster that way
        for t in tables:
            conn.execute(sa.schema.CreateTable(t))
            if t.comment and conn.dialect.supports_comments and not conn.dialect.inline_comments:
                conn.execute(sa.schema.SetTableComment(t))
        sqlite = conn.dialect.name == "sqlite"
        for t in tables:
            data = world[t.name]
            if not len(next(iter(data.values()))):
                continue
            if sqlite:
                cols = [_sqlite_column(data[c.name], c, shift) for c in t.columns]
                sql = f'INSERT INTO "{t.name}" ({", ".join(c.name for c in t.columns)}) VALUES ({", ".join("?" * len(cols))})'
                conn.connection.driver_connection.cursor().executemany(sql, list(zip(*cols)))
            elif conn.dialect.driver == "psycopg2":
                _copy_psycopg2(conn, t, data, shift)
            else:
                cols = {c.name: _generic_column(data[c.name], c, shift) for c in t.columns}
                names = list(cols)
                rows = [dict(zip(names, r)) for r in zip(*cols.values())]
                for i in range(0, len(rows), 20_000):
                    conn.execute(t.insert(), rows[i:i + 20_000])
        for ix in indexes:
            ix.create(conn)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    elif engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for t in tables:
                conn.exec_driver_sql(f'ANALYZE "{t.name}"')


# --------------------------------------------------------------------------------------------
# Public
# --------------------------------------------------------------------------------------------

def build(*, seed: int = 7, days: int = 56, scale: float = 1.0, as_of: datetime | None = None,
          truth: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """The world's tables as column arrays (timestamps in microseconds since DEMO_START, dates in
    days since DEMO_START), without touching a database. `truth`: also what only the generator
    knows (``credit_truth``: every application's early-delinquency outcome and probability, issued
    or not; ``large_loan_truth``: each large loan's lifetime default probability)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    if scale <= 0:
        raise ValueError("scale must be positive")
    as_of = as_of or DEMO_START + timedelta(days=days)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    if as_of < DEMO_START + timedelta(days=days):
        raise ValueError("as_of must not be before the end of the world (DEMO_START + days)")
    as_of_us = int((as_of - DEMO_START) / timedelta(microseconds=1))
    root = np.random.SeedSequence(seed)
    r_people, r_msg, r_loan = (np.random.Generator(np.random.PCG64(s)) for s in root.spawn(3))
    people, ctx = _people(r_people, days, scale, as_of_us)
    world = dict(people)
    world.update(_messenger(r_msg, days, scale, as_of_us, people, ctx))
    world.update(_lender(r_loan, days, scale, as_of_us))
    _pipeline_faults(world, days)
    return {name: world[name] for name in (*TABLES, *(("credit_truth", "large_loan_truth") if truth else ()))}


def _pipeline_faults(world: dict[str, dict[str, np.ndarray]], days: int) -> None:
    """The outage and the broken label feed, applied after the world is drawn (the other episodes keep their numbers)."""
    if OUTAGE_DAY < days:
        lo, hi = OUTAGE_DAY * _DAY, (OUTAGE_DAY + 1) * _DAY
        for table, col in (("user_sessions", "started_at"), ("engagement_predictions", "predicted_at")):
            t = world[table]
            world[table] = _take(t, (t[col] < lo) | (t[col] >= hi))
        actuals = world["engagement_actuals"]
        world["engagement_actuals"] = _take(actuals, np.isin(actuals["prediction_id"],
                                                             world["engagement_predictions"]["prediction_id"]))
    b0, b1 = LABEL_BREAK_DAYS
    if b0 < days:
        msg, labels = world["messages"], world["spam_labels"]
        broken = msg["message_id"][(msg["predicted_at"] >= b0 * _DAY) & (msg["predicted_at"] < b1 * _DAY)]
        recoded = np.isin(labels["message_id"], broken) & (labels["is_spam"] == 1)
        labels["is_spam"] = np.where(recoded, 3, labels["is_spam"]).astype(labels["is_spam"].dtype)


def generate(url: str, *, seed: int = 7, days: int = 56, scale: float = 1.0,
             as_of: datetime | None = None, shift: timedelta = timedelta(0)) -> dict:
    """Create (drop and recreate) the demo world's tables in the database at `url` and return the
    manifest of planted episodes (JSON-serialisable).

    `as_of` is the moment of the snapshot (default: the end of the world); pass a later one to see
    the defaults and credit labels that only arrive months after the loans were issued.
    `shift` moves every written time (a whole number of weeks keeps the weekdays); `as_of` and the
    returned manifest stay in the unshifted calendar (see `shift_dates`).
    """
    world = build(seed=seed, days=days, scale=scale, as_of=as_of)
    engine = sa.create_engine(url)
    try:
        _write(engine, world, shift)
    finally:
        engine.dispose()
    return manifest(seed=seed, days=days, scale=scale, as_of=as_of,
                    rows={name: len(next(iter(cols.values()))) for name, cols in world.items()})


def manifest(*, seed: int = 7, days: int = 56, scale: float = 1.0, as_of: datetime | None = None,
             rows: dict[str, int] | None = None) -> dict:
    """The planted episodes of a world with these parameters."""
    end = DEMO_START + timedelta(days=days)
    as_of = as_of or end
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    episodes: list[dict[str, Any]] = []

    def clip(a: float, b: float) -> tuple[str, str] | None:
        a, b = max(a, 0), min(b, days)
        return (_day_iso(a), _day_iso(b)) if a < b else None

    c0, c1 = CAMPAIGN_DAYS
    camp = clip(c0, c1)
    if camp:
        episodes.append({
            "name": "spam_campaign", "kind": "goal_breach", "subject": "spam_exposure_rate",
            "subject_type": "goal", "start": camp[0], "end": camp[1],
            "expected": {
                "status": "missed",
                "daily_value": "about 0.02-0.045 on every day of the campaign (target 0.01)",
                "weekly_value": f"about 0.16 in the review week starting {camp[0][:10]}",
                "elsewhere": "every other day below 0.005 (about 0.001), every other week below 0.01 (about 0.004)",
            },
            "description": ("A spam campaign from hijacked old accounts in new countries (ID, VN), "
                            "written to look like ordinary mail, sends ~260 extra messages a day; the "
                            "classifier blocks only about three quarters of them. Its messages were "
                            "purged from inboxes when it was stopped, so the week after is quiet."),
        })
        episodes.append({
            "name": "spam_campaign", "kind": "drift", "subject": "spam_classifier",
            "subject_type": "model", "start": camp[0], "end": camp[1],
            "expected": {
                "drifted_features": ["links_count", "sender_country"],
                "stable_features": ["sender_age_days", "text_length", "client"],
                "new_categories": {"sender_country": ["ID", "VN"]},
                "prediction_drift": True,
                "dataset_drift": False,
                "quality": {"recall": "below its learned floor (about 0.94) on campaign days (about 0.8)",
                            "roc_auc": "stays above 0.95"},
                "elsewhere": "no feature and no prediction drift against the reference on any other day",
            },
            "description": ("Campaign messages carry many links (3 + Poisson(2.5)) and come from "
                            "countries never seen before; sender age, text length and client follow "
                            "ordinary mail, so they do not drift."),
        })
        episodes.append({
            "name": "spam_campaign", "kind": "quality_floor", "subject": "spam_classifier",
            "subject_type": "model", "start": camp[0], "end": camp[1],
            "expected": {"below_floor": ["recall"],
                         "elsewhere": "every other judged window at or above its floors"},
            "description": ("The campaign's messages slip past the classifier: its recall (about 0.98 on the "
                            "reference's days, sd about 0.014) falls to about 0.8, below the floor learned from "
                            "the reference (their mean minus 3 standard deviations, about 0.94), on these days only."),
        })
    policy = clip(POLICY_DAY, days)
    if policy:
        episodes.append({
            "name": "credit_policy_change", "kind": "drift", "subject": "credit_scoring",
            "subject_type": "model", "start": policy[0], "end": policy[1],
            "expected": {
                "drifted_features": ["amount_rub"],
                "stable_features": ["income_rub", "age", "term_months", "region", "product"],
                "prediction_drift": False,
                "quality": "pending: labels (30+ days past due within 90 days on book) arrive 90 days after issue",
                "elsewhere": "no drift before the policy change",
            },
            "description": ("The bank raises the cash-loan limit from 1.5 to 5 million roubles and "
                            "sends large pre-approved offers: cash-loan amounts move up (median "
                            "250k -> 450k RUB) and the share of issued loans above 1,000,000 RUB grows "
                            "from about 6.5 % to about 11 % (about 50 -> 85 large loans a day). The "
                            "model is watched in weekly windows; the change starts on a Monday."),
        })
    episodes.append({
        "name": "large_loan_defaults", "kind": "insufficient_data", "subject": "large_loan_default_rate",
        "subject_type": "goal", "start": _day_iso(0), "end": _day_iso(days),
        "expected": {
            "status": "insufficient_data",
            "true_rate": LARGE_LOAN_PD,
            "observed": ("no default known yet: a loan defaults at 90 days past due, 120 days after issue "
                         "at the earliest" if (as_of - DEMO_START) < timedelta(days=120)
                         else "defaults of small loans appear 120 days after issue; large ones stay rare"),
            "loans_needed": "about 6,000 large loans without a default (rule of three: 3 / 0.0005) to show the target is met",
        },
        "description": ("Large loans (> 1,000,000 RUB) default with a lifetime probability of about "
                        f"{LARGE_LOAN_PD:.3%} ({LARGE_LOAN_DEFAULT_PER_PD:g} times their PD score); a few dozen are issued a day (more after the policy "
                        "change), far too few for a 0.05 % rate, and no default can be known yet."),
    })
    weeks_to_deadline = (datetime(DEADLINE.year, DEADLINE.month, DEADLINE.day, tzinfo=UTC) - DEMO_START) / timedelta(weeks=1)
    episodes.append({
        "name": "slow_engagement_growth", "kind": "off_track", "subject": "minutes_per_active_user",
        "subject_type": "goal", "start": _day_iso(0), "end": _day_iso(days),
        "expected": {
            "status": "missed",
            "trajectory": "off_track",
            "slope_minutes_per_week": ENGAGEMENT_GROWTH,
            "planned_slope_minutes_per_week": round((100 - ENGAGEMENT_BASE) / weeks_to_deadline, 3),
            "projected_at_deadline": round(ENGAGEMENT_BASE + ENGAGEMENT_GROWTH * weeks_to_deadline, 1),
        },
        "description": (f"Minutes per active user-day start at about {ENGAGEMENT_BASE:.0f} and grow "
                        f"{ENGAGEMENT_GROWTH} minutes a week: too slowly to reach 100 by {DEADLINE}."),
    })
    episodes.append({
        "name": "slow_engagement_growth", "kind": "no_drift", "subject": "engagement_model",
        "subject_type": "model", "start": _day_iso(0), "end": _day_iso(days),
        "expected": {
            "drifted_features": [],
            "prediction_drift": False,
            "quality": "the model, unaware of the growth, under-predicts more each week: actual minus predicted grows about 0.45 min a week from about 0",
        },
        "description": ("The growth comes from longer sessions, not from different users: the "
                        "features (user attributes and session counts) and the predictions are "
                        "stable, so nothing drifts against the fixed reference."),
    })
    outage = clip(OUTAGE_DAY, OUTAGE_DAY + 1)
    if outage:
        lost = ("The app's session log and the engagement model's prediction log lost a whole day "
                "(a broken export upstream): no session and no prediction of that day reached the tables.")
        episodes.append({
            "name": "engagement_outage", "kind": "outage", "subject": "minutes_per_active_user",
            "subject_type": "goal", "start": outage[0], "end": outage[1],
            "expected": {"status": "no_data", "elsewhere": "no other day is no_data"},
            "description": lost + " The goal's window has no rows at all: no_data, never on track."})
        episodes.append({
            "name": "engagement_outage", "kind": "outage", "subject": "engagement_model",
            "subject_type": "model", "start": outage[0], "end": outage[1],
            "expected": {"rows": 0, "volume_ratio": 0.0, "alerts": ["EngagementModelVolumeDrop"]},
            "description": lost + " The model's window has no rows: its volume against the 7 days before is 0."})
    broken = clip(*LABEL_BREAK_DAYS)
    if broken:
        episodes.append({
            "name": "broken_label_feed", "kind": "broken_labels", "subject": "spam_classifier",
            "subject_type": "model", "start": broken[0], "end": broken[1],
            "expected": {"failing_checks": ["label_values"], "quality_status": "invalid",
                         "elsewhere": "label_values passes on every other day"},
            "description": ("A new moderation tool writes spam labels as 3 instead of 1 for the messages of "
                            "these days: the label_values check fails and the windows' quality is withheld "
                            "(precision or recall from such labels would be wrong)."),
        })
    episodes.append({
        "name": "unknown_sender_age", "kind": "nulls", "subject": "spam_classifier",
        "subject_type": "model", "start": _day_iso(0), "end": _day_iso(days),
        "expected": {"null_share": {"sender_age_days": 0.02}},
        "description": "About 2 % of messages have no sender_age_days (external senders); not drift.",
    })
    return {
        "world": {
            "seed": seed, "days": days, "scale": scale,
            "start": _day_iso(0), "end": _day_iso(days),
            "as_of": as_of.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "reference": {"start": _day_iso(0), "end": _day_iso(min(REFERENCE_DAYS, days))},
            "rows": rows or {},
        },
        "episodes": episodes,
    }


# --------------------------------------------------------------------------------------------
# The config and the SQL that go with the world
# --------------------------------------------------------------------------------------------

def shift_dates(text: str, shift: timedelta) -> str:
    """Every ISO date (and the date part of every timestamp) in `text` moved by `shift`: the manifest
    and the config of a world written with that shift."""
    import re

    if not shift:
        return text

    def move(m: re.Match) -> str:
        return (date.fromisoformat(m.group(0)) + timedelta(days=shift.days)).isoformat()
    return re.sub(r"(?<!\d)\d{4}-\d\d-\d\d(?!\d)", move, text)


def sql_dir() -> Path:
    """Folder of the goals' SQL files: the package `monitor.metrics_sql` when installed, else the
    repository's `metrics_sql/`."""
    try:
        path = Path(str(resources.files("monitor.metrics_sql")))
        if (path / "spam_exposure_rate.sql").is_file():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "metrics_sql"


def sql_text(goal: str) -> str:
    """The SQL of one of the demo's goals."""
    return (sql_dir() / f"{goal}.sql").read_text()


def copy_sql(dest: str | Path) -> list[Path]:
    """Copy the goals' SQL files to `dest/metrics_sql/`, where `demo_config` refers to them."""
    out = Path(dest) / "metrics_sql"
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(sql_dir().glob("*.sql")):  # the goals' SQL and their estimates'
        target = out / path.name
        shutil.copyfile(path, target)
        copied.append(target)
    return copied


def demo_config_data(database_url: str, sql_dir: str = "metrics_sql") -> dict:
    """The config that watches the demo world in `database_url` (DESIGN.md format), as data; the
    goals' `sql:` paths are `<sql_dir>/<goal>.sql`, relative to the config file's folder."""
    start = DEMO_START.date()
    ref = {"start": start, "end": (DEMO_START + timedelta(days=REFERENCE_DAYS)).date()}

    def model(name, task, window, source, labels, drift, quality, segment, owner):
        return {"name": name, "task": task, "window": window, "start": start, "source": source, "labels": labels,
                "reference": ref, "drift": {"method": "auto", "threshold": None, "dataset_share": 0.5, **drift},
                "quality": quality, "segments": [segment], "recompute": 3, "owner": owner}

    def goal(name, title, kind, models, unit, direction, target, baseline, owner, why, maturity, severity, **extra):
        return {"name": name, "title": title, "sql": f"{sql_dir}/{name}.sql", "kind": kind, "models": models,
                "unit": unit, "direction": direction,
                "target": target, "baseline": {"value": baseline, "at": start}, "deadline": DEADLINE, "window": "1d",
                "start": start, "owner": owner, "why": why, "recompute": 3, "maturity": maturity, **extra,
                "review": "1w", "severity": severity}

    return {
        "version": 1,
        "database_url": database_url,
        "models": [
            model("spam_classifier", "binary_classification", "1d",
                  {"table": "messages", "id": "message_id", "timestamp": "predicted_at", "score": "spam_score",
                   "prediction": "is_blocked",
                   "features": {"numeric": ["links_count", "sender_age_days", "text_length"],
                                "categorical": ["sender_country", "client"]}},
                  {"table": "spam_labels", "id": "message_id", "label": "is_spam", "max_delay": "2d"},
                  {"alert_features": ["links_count"]}, {"roc_auc": {"min": 0.95}, "recall": {"min": {"sd": 3}}},
                  "client", "trust-and-safety-ml"),
            model("credit_scoring", "binary_classification", "1w",
                  {"table": "loan_applications", "id": "application_id", "timestamp": "scored_at", "score": "pd_score",
                   "prediction": "predicted_default",
                   "features": {"numeric": ["amount_rub", "income_rub", "age", "term_months"],
                                "categorical": ["region", "product"]}},
                  {"table": "credit_labels", "id": "application_id", "label": "is_bad", "max_delay": "100d"},
                  {}, {"roc_auc": {"min": 0.70}}, "product", "credit-risk"),
            model("engagement_model", "regression", "1d",
                  {"table": "engagement_predictions", "id": "prediction_id", "timestamp": "predicted_at",
                   "score": "predicted_minutes",
                   "features": {"numeric": ["friends_count", "sessions_7d", "age"], "categorical": ["platform", "region"]}},
                  {"table": "engagement_actuals", "id": "prediction_id", "label": "actual_minutes", "max_delay": "1d"},
                  {}, {"mae": {"max": 40}}, "platform", "feed-ml"),
        ],
        "goals": [
            goal("spam_exposure_rate", "Share of active users who saw spam", "rate", ["spam_classifier"], "ratio",
                 "at_most", 0.01, 0.005, "trust-and-safety", "Spam drives users away; exposure is what they feel.",
                 "2d", "page"),
            goal("large_loan_default_rate", "Share of large loans (> 1,000,000 RUB) that default", "rate",
                 ["credit_scoring"], "ratio", "at_most", 0.0005, 0.0004, "credit-risk",
                 "Large loans carry most of the credit losses; their defaults must stay rare.",
                 "120d", "ticket", estimate={"sql": f"{sql_dir}/large_loan_default_rate_estimate.sql"}),
            goal("minutes_per_active_user", "Average minutes of use per active user per day", "rate",
                 ["engagement_model"], "minutes", "at_least", 100, 80, "feed",
                 "Time spent is how we know the feed is worth opening.", "0d", "ticket"),
        ],
    }


# Why a value is what it is, written beside it in the YAML: (model or goal, key) -> comment.
CONFIG_COMMENTS = {
    ("spam_classifier", "max_delay"): "reports, moderation and the nightly review",
    ("spam_classifier", "quality"): "recall: the reference days' mean minus 3 standard deviations (about 0.94)",
    ("credit_scoring", "window"): "a batch model, watched weekly (~8,000 applications)",
    ("credit_scoring", "timestamp"): "scored in 15-minute batches",
    ("credit_scoring", "label"): "30+ days past due within 90 days on book",
    ("credit_scoring", "max_delay"): "known 90 days after issue: most windows stay pending",
    ("engagement_model", "label"): "the same day's minutes, computed nightly",
    ("spam_exposure_rate", "maturity"): "spam labels arrive within two days",
    ("large_loan_default_rate", "maturity"): "a default shows 120 days after issue at the earliest",
    ("large_loan_default_rate", "estimate"): "from the PD scores, until then",
}
CONFIG_HEADER = ("The demo world's config: three models and the three business goals that hang on them.\n"
                 "Generated by `monitor demo`; edit freely. Relative paths are relative to this file's folder.")


def dump_config(data: dict, header: str = "", comments: dict[tuple[str, str], str] | None = None) -> str:
    """A config as YAML, the way a person writes one: `header` as its leading comment, a blank line
    between its sections and between their entries, short mappings and lists of names on one line,
    and `comments` (entry name, key) -> text written beside those keys."""
    import re

    import yaml

    comments = comments or {}

    class Flow(dict):
        pass

    class FlowList(list):
        pass

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)  # a section's entries indented under it

    Dumper.add_representer(Flow, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
    Dumper.add_representer(FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))

    def styled(node, commented: set[str], indent: int):
        """`node` with its short parts marked for one line; `indent`: the column of its keys."""
        if isinstance(node, list):
            kids = [styled(v, commented, indent + 2) for v in node]
            return FlowList(kids) if all(not isinstance(v, (dict, list)) for v in kids) else kids
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            v = styled(v, commented, indent + 2)
            if isinstance(v, dict) and not commented & set(v) and all(
                    isinstance(x, (Flow, FlowList)) or not isinstance(x, (dict, list)) for x in v.values()):
                line = indent + len(k) + 2 + len(yaml.dump(v, Dumper=Dumper, default_flow_style=True, width=10**6).strip())
                v = Flow(v) if line <= 96 else v
            out[k] = v
        return out

    def dump(key, value):
        if isinstance(value, list):
            value = [styled(v, {k for e, k in comments if isinstance(v, dict) and e == v.get("name")}, 4) for v in value]
        return yaml.dump({key: value}, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120).rstrip()

    text = "\n\n".join([dump(k, v) for k, v in data.items()])
    lines, entry = [f"# {line}" for line in header.splitlines()] + ([""] if header else []), None
    for line in text.splitlines():
        m = re.match(r"^\s*(- )?(\w+):", line)
        if m and m.group(1) and m.group(2) == "name":
            if entry is not None:
                lines.append("")
            entry = line.split(":", 1)[1].strip()
        elif not line.startswith(" "):
            entry = None
        note = comments.get((entry, m.group(2))) if m else None
        lines.append(f"{line}  # {note}" if note else line)
    return "\n".join(lines) + "\n"


def demo_config(database_url: str, sql_dir: str = "metrics_sql", header: str = CONFIG_HEADER) -> str:
    """YAML text of `demo_config_data`, with the comments that explain it."""
    return dump_config(demo_config_data(database_url, sql_dir), header, CONFIG_COMMENTS)


def table_digest(url: str) -> str:
    """SHA-256 over every row of the demo tables (ordered by primary key): equal worlds, equal digests."""
    h = hashlib.sha256()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            for name in TABLES:
                t = SCHEMA.tables[name]
                h.update(name.encode())
                for row in conn.execute(sa.select(t).order_by(*t.primary_key.columns)):
                    h.update(repr(tuple(row)).encode())
    finally:
        engine.dispose()
    return h.hexdigest()
