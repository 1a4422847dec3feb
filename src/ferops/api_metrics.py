"""What the service answers, as Prometheus metrics beside BentoML's own on ``/metrics``.

* ``ferops_answers_total{route, outcome}``: answered requests; ``outcome`` is ``faces``,
  ``no_face`` or ``image_too_small``;
* ``ferops_face_expressions_total{route, expression}``: every face answered, by the expression
  predicted (a shift in what the service answers shows here first);
* ``ferops_errors_total{route, status, reason}``: error answers by HTTP status and reason code
  (:mod:`ferops.api`'s table): the 503s by cause (``overloaded``, ``timeout``,
  ``classifier_unavailable``) and the 4xx by what was wrong with the upload;
* ``ferops_lane_depth{lane}``: requests inside each lane (``frames``, ``crops``) now;
* ``ferops_model_info{model}``: 1 for the BentoML model tag served.

Created in the API worker, never at import: BentoML 1.4.40 sets ``PROMETHEUS_MULTIPROC_DIR``
when a worker starts, after the service module is imported, and ``prometheus_client`` only
writes the shared files its ``/metrics`` reads when that variable is set before its metrics are
made (``bentoml.metrics`` is deprecated for ``prometheus_client`` used directly).
"""

from __future__ import annotations

from typing import Any


class ServiceMetrics:
    """The service's own metrics (see the module); one instance per API worker."""

    def __init__(self, model_tag: str) -> None:
        from prometheus_client import Counter, Gauge

        self.answers = Counter(
            "ferops_answers", "Answered requests by route and outcome", ["route", "outcome"]
        )
        self.expressions = Counter(
            "ferops_face_expressions",
            "Faces answered, by predicted expression",
            ["route", "expression"],
        )
        self.errors = Counter(
            "ferops_errors",
            "Error answers by route, HTTP status and reason code",
            ["route", "status", "reason"],
        )
        self.lane_depth = Gauge(
            "ferops_lane_depth",
            "Requests inside each lane (admitted, not yet answered)",
            ["lane"],
            multiprocess_mode="livesum",
        )
        model = Gauge(
            "ferops_model_info", "The model served (1)", ["model"], multiprocess_mode="livemax"
        )
        model.labels(model_tag).set(1)

    def answer(self, route: str, faces: list[Any], reason: str | None) -> None:
        """Count an answer with these faces (records with ``expression``) or this reason."""
        self.answers.labels(route, reason or "faces").inc()
        for face in faces:
            expression = face["expression"] if isinstance(face, dict) else face.expression
            self.expressions.labels(route, expression).inc()

    def error(self, route: str, error: Any) -> None:
        """Count an error answer (a :class:`ferops.api.RequestError`)."""
        self.errors.labels(route, str(error.status), error.error).inc()
