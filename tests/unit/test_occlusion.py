"""Occlusion maps (ferops.occlusion): a tiny ONNX network whose decision depends on one region of
its input, built with onnx.helper and run by ONNX Runtime, must get a map that peaks there."""

from __future__ import annotations

import numpy as np
import pytest

from ferops.occlusion import (
    FILL,
    GRID,
    cell_edges,
    maps_from_logits,
    masked_batch,
    occlusion_maps,
    sensitivity,
)


def region_network(size: int, rows: tuple[int, int], cols: tuple[int, int]):
    """An ONNX Runtime session: logits = [10 · mean of input[rows, cols], 0, −1] — the network
    says class 0 exactly when that region is bright; nothing else of the input matters."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def ints(name: str, values: list[int]):
        return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)

    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["region"]),
            helper.make_node("ReduceMean", ["region", "mean_axes"], ["mean"], keepdims=0),
            helper.make_node("Unsqueeze", ["mean", "one"], ["column"]),
            helper.make_node("MatMul", ["column", "weights"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["logits"]),
        ],
        "region_network",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            ints("starts", [rows[0], cols[0]]),
            ints("ends", [rows[1], cols[1]]),
            ints("axes", [2, 3]),
            ints("mean_axes", [1, 2, 3]),
            ints("one", [1]),
            helper.make_tensor("weights", TensorProto.FLOAT, [1, 3], [10.0, 0.0, 0.0]),
            helper.make_tensor("bias", TensorProto.FLOAT, [3], [0.0, 0.0, -1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["logits"], {"input": batch})[0]


@pytest.mark.parametrize(
    ("size", "cell"),
    [(48, (GRID // 2, GRID - 1)), (48, (GRID - 1, 0)), (32, (1, GRID - 2))],  # 32 px: uneven cells
)
def test_map_peaks_where_the_decision_is(size: int, cell: tuple[int, int]) -> None:
    edges = cell_edges(size)
    i, j = cell
    forward = region_network(size, (edges[i], edges[i + 1]), (edges[j], edges[j + 1]))
    face = np.random.default_rng(0).uniform(0.5, 1.0, (2, 1, size, size)).astype(np.float32)
    base = forward(face)
    assert (base.argmax(1) == 0).all(), "the bright region makes the network say class 0"

    maps = occlusion_maps(forward, face)
    assert len(maps) == 2
    for occlusion in maps:
        assert occlusion.cells.shape == (GRID, GRID) and occlusion.predicted == 0
        assert np.unravel_index(occlusion.cells.argmax(), occlusion.cells.shape) == cell
        assert occlusion.cells[cell] == 1.0
        assert np.delete(occlusion.cells.ravel(), i * GRID + j).max() < 1e-6, "nothing else counts"
        assert occlusion.max_drop > 0.5  # hiding it turns the answer
    # The same maps from given base logits, and with the masked copies run in chunks.
    chunked = occlusion_maps(forward, face, base_logits=base, chunk=7)
    for a, b in zip(maps, chunked, strict=True):
        np.testing.assert_allclose(a.cells, b.cells, atol=1e-6)


def test_masked_batch_hides_one_cell_per_copy() -> None:
    size = 32
    faces = np.stack([np.full((1, size, size), v, np.float32) for v in (1.0, 2.0)])
    masked = masked_batch(faces)
    n = GRID * GRID
    assert masked.shape == (2 * n, 1, size, size) and masked.dtype == np.float32
    edges = cell_edges(size)
    assert edges[0] == 0 and edges[-1] == size and np.diff(edges).min() >= size // GRID
    for f, value in enumerate((1.0, 2.0)):
        for i in range(GRID):
            for j in range(GRID):
                copy = masked[f * n + i * GRID + j, 0]
                hidden = copy == FILL
                assert hidden[edges[i] : edges[i + 1], edges[j] : edges[j + 1]].all()
                assert hidden.sum() == (edges[i + 1] - edges[i]) * (edges[j + 1] - edges[j])
                assert (copy[~hidden] == value).all()
    with pytest.raises(ValueError, match="N×1×S×S"):
        masked_batch(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="grid"):
        cell_edges(4, grid=5)


def test_sensitivity_is_scaled_clipped_and_flat_when_nothing_matters() -> None:
    base = np.array([2.0, 0.0, 0.0])
    masked = np.tile(base, (GRID * GRID, 1))
    masked[3] = [0.0, 2.0, 0.0]  # hiding cell (0, 3) turns the answer
    masked[7] = [3.0, 0.0, 0.0]  # hiding cell (1, 1) makes it surer: no sensitivity
    occlusion = sensitivity(base, masked)
    assert occlusion.cells[0, 3] == 1.0 and occlusion.cells.min() == 0.0
    assert occlusion.cells[1, 1] == 0.0 and 0 < occlusion.max_drop < 1
    flat = sensitivity(base, np.tile(base, (GRID * GRID, 1)))
    assert flat.max_drop == 0.0 and not flat.cells.any()
    with pytest.raises(ValueError, match="masked logits"):
        maps_from_logits(base[None], masked[:-1])


def test_json_form() -> None:
    occlusion = sensitivity(
        np.array([1.0, 0.0]),
        np.array([[0.0 if k == GRID + 2 else 1.0, 0.0] for k in range(GRID * GRID)]),
    )
    record = occlusion.to_dict()
    assert record["grid"] == GRID and len(record["cells"]) == GRID
    assert all(len(row) == GRID for row in record["cells"]) and record["cells"][1][2] == 1.0
    assert set(record) == {"grid", "cells", "max_drop", "fill"}
