"""Batch scoring on Spark: the registered model over a table of images, written as Parquet.

The images are a folder or glob of image files read by Spark's ``binaryFile`` source, or a
Parquet / CSV table with a ``path`` column (the files then read by the executors, so the paths
must be visible to them: a shared file system). The model is a registered version
(``models:/ferops-resnet18@champion`` by default) applied through MLflow's
``mlflow.pyfunc.spark_udf``: every executor loads the pyfunc once and answers each row of image
bytes with the record the service's ``/predict`` gives (:class:`ferops.registry.BundleModel`).
The output has one row per image: ``path``, then the record's ``faces`` (expression, the 7
probabilities as a struct, box, score, principal), ``reason``, ``model``, ``error``,
``detail``. The same code runs on ``local[N]`` and on a cluster (``--master``); executors need
``ferops`` importable (installed, or on ``PYTHONPATH``) and read the model from the tracking
server's artifact store.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from ferops.data import CLASSES, IMAGE_SUFFIXES

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[2]"
DEFAULT_DRIVER_MEMORY = "1g"
#: Rows per Arrow batch handed to the pyfunc: face crops of a batch share one classifier call.
DEFAULT_BATCH_ROWS = 32
#: Table suffixes read as a table of paths; anything else is a folder / glob of image files.
TABLE_SUFFIXES = (".parquet", ".csv")


def champion_uri() -> str:
    """``models:/ferops-resnet18@champion``: what ``ferops score`` applies by default."""
    from ferops import MODEL_NAME
    from ferops.registry import CHAMPION  # mlflow: only when asked

    return f"models:/{MODEL_NAME}@{CHAMPION}"


def record_type():
    """The Spark type of one ``/predict`` record (the UDF's result type)."""
    from pyspark.sql import types as T

    probabilities = T.StructType([T.StructField(c, T.DoubleType()) for c in CLASSES])
    face = T.StructType(
        [
            T.StructField("expression", T.StringType()),
            T.StructField("probabilities", probabilities),
            T.StructField("box", T.ArrayType(T.DoubleType())),
            T.StructField("score", T.DoubleType()),
            T.StructField("principal", T.BooleanType()),
        ]
    )
    return T.StructType(
        [
            T.StructField("faces", T.ArrayType(face)),
            T.StructField("reason", T.StringType()),
            T.StructField("model", T.StringType()),
            T.StructField("error", T.StringType()),
            T.StructField("detail", T.StringType()),
        ]
    )


def spark_session(
    master: str = DEFAULT_MASTER,
    driver_memory: str = DEFAULT_DRIVER_MEMORY,
    executor_memory: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    app: str = "ferops-score",
):
    """A Spark session for scoring (stop it when done: ``session.stop()``)."""
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
        .config("spark.ui.enabled", "false")
    )
    if executor_memory:
        builder = builder.config("spark.executor.memory", executor_memory)
    if master.startswith("local"):
        # Local workers run this interpreter, not whatever ``python3`` is first on PATH (Spark
        # 4.3's default): without an activated venv that one lacks pandas and the model's
        # requirements. PySpark reads the variable when the session starts; a cluster's
        # executors keep their own.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return builder.getOrCreate()


def read_images(spark, source: str | Path):
    """A DataFrame (``path``, ``content`` bytes) of the images in ``source``: a folder (searched
    recursively) or glob of image files, or a ``.parquet`` / ``.csv`` table with a ``path``
    column."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    text = str(source)
    if text.lower().endswith(TABLE_SUFFIXES):
        reader = (
            spark.read.option("header", "true") if text.lower().endswith(".csv") else spark.read
        )
        table = reader.format(text.rsplit(".", 1)[-1].lower()).load(text)
        if "path" not in table.columns:
            raise ValueError(f"{text} needs a 'path' column, it has {table.columns}")

        @F.pandas_udf(T.BinaryType())
        def read_bytes(paths):
            return paths.map(lambda p: Path(p.removeprefix("file:")).read_bytes())

        return table.select("path", read_bytes("path").alias("content"))
    suffixes = sorted(IMAGE_SUFFIXES)
    glob = "*.{" + ",".join(s.lstrip(".") for s in suffixes + [s.upper() for s in suffixes]) + "}"
    frame = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", glob)
        .option("recursiveFileLookup", "true")
        .load(text)
    )
    return frame.select("path", "content")


def score(images, model_uri: str):
    """``images`` (``path``, ``content``) → ``path`` + the ``/predict`` record's columns, through
    ``mlflow.pyfunc.spark_udf`` on ``model_uri`` (MLflow's tracking URI as set now)."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    udf = mlflow.pyfunc.spark_udf(
        images.sparkSession, model_uri, result_type=record_type(), env_manager="local"
    )
    scored = images.select("path", udf(F.struct(F.col("content").alias("image"))).alias("r"))
    # MLflow casts a struct's string field with astype(str), so a batch mixing None and text
    # gives "nan" / "None" for the None rows; no reason, error code or detail is either word.
    nullable = ("reason", "error", "detail")
    return scored.select("path", "r.*").select(
        "path",
        *(
            F.when(~F.col(c).isin("nan", "None"), F.col(c)).alias(c) if c in nullable else c
            for c in record_type().fieldNames()
        ),
    )


def score_to_parquet(
    source: str | Path,
    out: str | Path,
    model_uri: str,
    master: str = DEFAULT_MASTER,
    driver_memory: str = DEFAULT_DRIVER_MEMORY,
    executor_memory: str | None = None,
    partitions: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> dict[str, Any]:
    """Score every image of ``source`` with ``model_uri`` into the Parquet folder ``out``
    (overwritten); stops the Spark session it started. Returns counts and the wall time."""
    import time

    spark = spark_session(master, driver_memory, executor_memory, batch_rows)
    try:
        start = time.perf_counter()
        images = read_images(spark, source)
        # A folder of small files is one partition: spread it over every core / executor.
        partitions = partitions or spark.sparkContext.defaultParallelism
        if images.rdd.getNumPartitions() < partitions:
            images = images.repartition(partitions)
        score(images, model_uri).write.mode("overwrite").parquet(str(out))
        seconds = time.perf_counter() - start
        summary = spark.read.parquet(str(out)).selectExpr(  # one pass over the output
            "count(*) AS images",
            "coalesce(sum(size(faces)), 0) AS faces",
            "count(error) AS errors",
        )
        counts = {k: int(v) for k, v in summary.first().asDict().items()}
    finally:
        spark.stop()
    rate = counts["images"] / seconds if seconds else 0.0
    log.info(
        "%d images (%d faces, %d not usable) scored in %.1f s (%.1f images/s) on %s → %s",
        counts["images"],
        counts["faces"],
        counts["errors"],
        seconds,
        rate,
        master,
        out,
    )
    return {
        **counts,
        "seconds": round(seconds, 2),
        "images_per_s": round(rate, 2),
        "master": master,
    }
