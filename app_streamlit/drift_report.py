"""Evidently's HTML report of a model window, as the app's Models page embeds it."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from monitor import engines
from monitor.config import Model
from monitor.db import quote, quote_table
from monitor.modeljobs import reference_range
from monitor.modeljobs.source import connect, model_bounds, model_where
from monitor.windows import Window


def _sample_frame(conn, model: Model, window: Window, sample: int, with_labels: bool):
    import pandas as pd

    s = model.source
    cols = [*s.features.numeric, *s.features.categorical, s.score] + ([s.prediction] if s.prediction else [])
    sel = ", ".join(f"s.{quote(conn, c)} AS {quote(conn, c)}" for c in dict.fromkeys(cols))
    t = f"{quote_table(conn, s.table)} s"
    if with_labels:
        lab = model.labels
        sel += f", l.{quote(conn, lab.label)} AS {quote(conn, '__label__')}"
        t += (f" LEFT JOIN {quote_table(conn, lab.table)} l ON l.{quote(conn, lab.id)} = s.{quote(conn, s.id)}")
    sql = f"SELECT {sel} FROM {t} WHERE {model_where(conn, model, 's.')} ORDER BY {engines.of(conn).random()} LIMIT {int(sample)}"
    result = conn.execute(sa.text(sql), model_bounds(conn, model, window))
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def evidently_report(source_engine, model: Model, window: Window, reference: Window | None = None,
                     sample: int = 20000, path: str | Path | None = None) -> str | Path:
    """Evidently's HTML report of one window against its reference, on at most `sample` random rows of each.

    Writes `path` and returns it; without a path returns the HTML. Evidently is imported here:
    importing it takes seconds, and nothing else needs it.
    """
    import pandas as pd
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        Regression,
        Report,
    )
    from evidently.presets import (
        ClassificationPreset,
        DataDriftPreset,
        RegressionPreset,
    )

    reference = reference or reference_range(model, window)
    s = model.source
    with_labels = model.labels is not None
    with connect(source_engine) as conn:
        cur = _sample_frame(conn, model, window, sample, with_labels)
        ref = _sample_frame(conn, model, reference, sample, with_labels)
        conn.rollback()
    numeric = [*s.features.numeric, s.score]
    for df in (cur, ref):
        for c in numeric:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    metrics = [DataDriftPreset(columns=[*s.features.numeric, *s.features.categorical, s.score],
                               method=None if model.drift.method == "auto" else model.drift.method,
                               threshold=model.drift.threshold if isinstance(model.drift.threshold, float) else None,
                               drift_share=model.drift.dataset_share)]
    definition = {"numerical_columns": numeric, "categorical_columns": list(s.features.categorical)}
    labelled = with_labels and cur["__label__"].notna().any() and ref["__label__"].notna().any()
    if labelled:
        cur, ref = cur[cur["__label__"].notna()], ref[ref["__label__"].notna()]
        if model.task == "binary_classification":
            for df in (cur, ref):
                df["__label__"] = df["__label__"].astype(int)
                df["__pred__"] = (df[s.prediction].astype(int) if s.prediction else (df[s.score] >= 0.5).astype(int))
            definition["classification"] = [BinaryClassification(target="__label__", prediction_labels="__pred__",
                                                                 prediction_probas=s.score)]
            metrics.append(ClassificationPreset())
        else:
            definition["regression"] = [Regression(target="__label__", prediction=s.score)]
            metrics.append(RegressionPreset())
    dd = DataDefinition(**definition)
    snapshot = Report(metrics).run(Dataset.from_pandas(cur, data_definition=dd),
                                   Dataset.from_pandas(ref, data_definition=dd))
    if path is None:
        return snapshot.get_html_str(as_iframe=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path
