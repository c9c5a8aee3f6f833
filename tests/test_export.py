"""ONNX export: dynamic batch, agreement with torch to 1e-4 (fp32), int8 quantisation, atomic writes."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from ondevice.examples import small_cnn, transformer_block
from ondevice.export import ExportMismatchError, export_onnx, quantize_dynamic_int8, verify_onnx


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    model, inputs = small_cnn(width=16, length=256)
    path = export_onnx(model, inputs, tmp_path_factory.mktemp("cnn") / "cnn.onnx")
    return model, inputs, path


def test_conv_net_export_matches_torch_to_1e4_at_several_batch_sizes(cnn_onnx):
    model, inputs, path = cnn_onnx
    check = verify_onnx(model, path, inputs, atol=1e-4, batch_sizes=(1, 3, 17))
    assert check.ok
    assert check.max_abs_error <= 1e-4
    assert check.batch_sizes == (1, 3, 17)
    # The batch axis is symbolic in the graph, not a baked constant.
    dim0 = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value


def test_transformer_block_export_matches_torch_to_1e4(tmp_path):
    model, inputs = transformer_block(d_model=32, heads=4, length=12)
    path = export_onnx(model, inputs, tmp_path / "block.onnx")
    check = verify_onnx(model, path, inputs, atol=1e-4, batch_sizes=(1, 5))
    assert check.max_abs_error <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["block.onnx"]  # nothing left under a temporary name


def test_two_input_model_exports_with_named_inputs(tmp_path):
    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(3, 4)

        def forward(self, x0, x1):
            return self.a(x0) * self.b(x1)

    model = Mix()
    inputs = (torch.randn(2, 6), torch.randn(2, 3))
    path = export_onnx(model, inputs, tmp_path / "mix.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x0", "x1"]
    assert verify_onnx(model, path, inputs, batch_sizes=(4,)).max_abs_error <= 1e-4


def test_verify_names_the_tolerance_when_outputs_differ(cnn_onnx, tmp_path):
    _, inputs, path = cnn_onnx
    other, _ = small_cnn(width=16, length=256, seed=1)  # same shapes, other weights
    expected = r"batch size 1 differs from torch by up to .*tolerance: absolute 0\.0001"
    with pytest.raises(ExportMismatchError, match=expected):
        verify_onnx(other, path, inputs)
    check = verify_onnx(other, path, inputs, raise_on_mismatch=False)
    assert not check.ok and check.max_abs_error > 1e-4


def test_int8_quantisation_stores_int8_weights_and_stays_close(cnn_onnx, tmp_path):
    model, _, path = cnn_onnx
    q = quantize_dynamic_int8(path, tmp_path / "cnn.int8.onnx")
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"ConvInteger", "DynamicQuantizeLinear"} <= ops
    # Conv and linear weights are stored as int8; only biases, norms and scales stay float.
    int8_weights = [t for t in onnx.load(str(q)).graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims]
    assert sum(int(np.prod(t.dims)) for t in int8_weights) == sum(
        m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))
    )
    x = torch.randn(32, 2, 256, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    # int8 is an approximation: a few per cent of the logits' energy, and not exact.
    relative = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert 1e-6 < relative < 0.02
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.int8.onnx"]


def test_failed_export_names_the_model_and_leaves_no_file(tmp_path):
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("deliberately broken forward")

    with pytest.raises(RuntimeError, match=r"ONNX export of Broken .* failed"):
        export_onnx(Broken(), torch.randn(2, 3), tmp_path / "broken.onnx")
    assert list(tmp_path.iterdir()) == []


def test_quantise_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.onnx"):
        quantize_dynamic_int8(tmp_path / "nope.onnx", tmp_path / "out.onnx")


def test_external_data_export_keeps_the_weights_beside_the_graph(tmp_path):
    model, example = small_cnn(length=128)
    path = export_onnx(model, example, tmp_path / "cnn.onnx", external_data=True)
    data = tmp_path / "cnn.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx", "cnn.onnx.data"]  # no partial files left
    assert data.stat().st_size > 0.9 * 4 * sum(p.numel() for p in model.parameters())  # small ones stay inline
    assert path.stat().st_size < data.stat().st_size
    assert verify_onnx(model, path, example).max_abs_error <= 1e-4
    # Exporting again in the graph-only form removes the stale weights file.
    export_onnx(model, example, path, external_data=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"]


def test_extra_symbolic_axes_follow_a_variadic_forward(tmp_path):
    class SumAll(nn.Module):
        def forward(self, first, *rest):
            return first + sum(r.sum(dim=1, keepdim=True) for r in rest)

    inputs = (torch.randn(2, 1), torch.randn(2, 5), torch.randn(2, 5))
    length = torch.export.Dim("length", min=2, max=64)
    path = export_onnx(SumAll(), inputs, tmp_path / "sum.onnx", dynamic_axes=[{}, {1: length}, {1: length}])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a, b, c = np.ones((3, 1), np.float32), np.ones((3, 9), np.float32), np.ones((3, 9), np.float32)
    np.testing.assert_allclose(session.run(None, {"x0": a, "x1": b, "x2": c})[0], np.full((3, 1), 19.0))
