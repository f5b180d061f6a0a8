"""A model's window: drift, online signals and offline quality, pushed down to the database.

The modules, in the order a window uses them: `planning` (which windows, which reference range),
`specs` (what to count, from the reference rows), `passes` (the SQL passes over a window's rows),
`references` (the reference summary), `compare` (drift), `quality` (offline quality and its
bands), `checks` (data checks) and `window` (`compute`: one window from start to end).

How a window is computed (`compute`):

1. The **reference summary**. A *spec* fixes, per column, what is counted: cut points at the
   reference's quantiles (or its values, when a numeric column has at most 20), the reference
   categories (top 50), the segment values (top `max_segments`). The reference's statistics are
   then one pass of aggregates over its rows. A fixed `{start, end}` reference is computed once
   and stored (once its range has ended); a `{rolling: N}` reference is the *sum of the stored
   summaries* of the windows just before, each window's summary being stored when that window is
   computed: every row is scanned once, whatever N.
2. **One pass over the window's rows** computes every numeric column's statistics as plain
   aggregates, portable to PostgreSQL and SQLite: ``COUNT(x)``, ``SUM(x)``,
   ``SUM(CASE WHEN x < e THEN 1 ELSE 0 END)`` (histograms, KS), ``SUM(ABS(x - e))`` (Wasserstein),
   and ``SUM((x - c)^2)`` for references. On engines with a stable hash (PostgreSQL, DuckDB,
   Spark) the Wasserstein sums, most of the aggregates, take a query of their own that reads, in
   windows of more than SAMPLE_ROWS values, a fixed sample of about SAMPLE_ROWS rows picked by a
   hash of the id (`_distances`), and the multivariate sums of products are taken over the same
   sample, in the same query (in one of their own with segments: `moments`); the rest is exact.
   The categorical columns are counted by one ``GROUP BY`` over all of them (a hash per row, where
   a CASE per category would cost a comparison each), with a LIMIT that keeps it bounded, else one
   mapped ``GROUP BY`` per column. With segments
   both group by the segment too (a bounded CASE), and the whole window is the sum of its segments.
   Python receives one row per segment (per category combination): memory does not grow with rows.
3. **Offline quality** (labels mature): one query joins the window's predictions to their labels
   and sorts them once by score; ``COUNT(*)`` and ``SUM(label)`` over that order (rows and
   positives scored at least as high) give the Mann-Whitney U in integers and the precision at
   every positive's score, so ROC AUC, average precision, log loss and Brier are exact; precision/recall/F1 come from the
   prediction column (or score >= 0.5). On Spark, which runs a window function ordered over every
   row in one task, the rows are ordered within buckets of score instead (`split_order`); on
   DuckDB under a `memory_limit`, that sorts only so many rows, the query runs once per slice of
   score (`sort_rows`). The result is one row. On PostgreSQL it runs on a second connection that
   imports the first one's snapshot (``pg_export_snapshot`` / ``SET TRANSACTION SNAPSHOT``),
   alongside the pass of step 2: both see the same rows. With integer ids it starts once the pass
   has found the window's smallest and largest id, and reads only the labels in that range: with
   ids that grow with time, one window's labels, not the whole history's.
4. **score_p95**: from the quality query (two order statistics of the rows it has sorted) when
   every scored row is labelled exactly once, else ``ORDER BY score DESC LIMIT 2 OFFSET k`` (a
   top-N sort in the database). Exact either way.
"""
from ..windows import Window
from .checks import REFERENCE_MIN_ROWS
from .passes import OTHER, SAMPLE_BUCKETS, SAMPLE_ROWS, scan
from .planning import plan_windows, reference_range
from .quality import quality_binary, quality_multiclass, quality_regression
from .source import connect
from .specs import CAT_MAX, W_LEVELS, build_spec
from .window import compute

__all__ = [
    "CAT_MAX", "OTHER", "REFERENCE_MIN_ROWS", "SAMPLE_BUCKETS", "SAMPLE_ROWS", "W_LEVELS", "Window",
    "build_spec", "compute", "connect",
    "plan_windows", "quality_binary", "quality_multiclass", "quality_regression", "reference_range", "scan",
]
