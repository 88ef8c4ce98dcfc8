"""ONNX export of paths (codenn_adapters.onnx_export) and the CPU runtimes that run the files.

Skip and cross paths of AlexNet, MobileNetV2 and a timm CNN (64x64 inputs) are exported once per
module; each test checks one property of those exports: the files a provider serves, parity
with PyTorch in onnxruntime, the dynamic batch, and that no file holds another provider's
parameters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
import timm
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

from codenn import Service
from codenn.errors import CodennError, ConfigError, ExportError
from codenn.paths.composed import ComposedPath
from codenn.train.synthetic import digits
from codenn_adapters.onnx_export import (
    FP32_TOLERANCE,
    export_module,
    export_path,
    find_leaks,
    provider_tensors,
    split_path,
)
from codenn_adapters.runtimes import (
    DeviceUnavailableError,
    OrtCpu,
    OrtCuda,
    TorchCudaGraph,
    TorchEager,
    make_runtime,
)
from tiny import TinyCNN, tiny_plugins

pytestmark = [pytest.mark.onnx, pytest.mark.usefixtures("one_torch_thread")]

SIZE = 64
# Paths that re-enter the local model late keep the files small (AlexNet's fc6/fc7 alone are
# 218 MB): the whole file stays well under 90 s on 2 cores. docs/export.md has the figures of
# longer paths.
ALEX_SKIP = "alexnet[:2] > alexnet[6:]"
ALEX_CROSS = "alexnet[:1] > mobilenet_v2[1:3] > alexnet[6:]"
MNV2_SKIP = "mobilenet_v2[:2] > mobilenet_v2[6:]"
TIMM_SKIP = "rn[:2] > rn[3:]"
TIMM_CROSS = "mobilenet_v2[:2] > rn[2:3] > mobilenet_v2[6:]"


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    torch.manual_seed(0)
    return {
        "alexnet": Service("alexnet", torchvision.models.alexnet(num_classes=10), input_shape=(3, SIZE, SIZE)),
        "mobilenet_v2": Service("mobilenet_v2", torchvision.models.mobilenet_v2(num_classes=8),
                                input_shape=(3, SIZE, SIZE)),
        "rn": Service("rn", timm.create_model("resnet10t", num_classes=10), input_shape=(3, SIZE, SIZE)),
    }


@pytest.fixture(scope="module")
def tiny() -> dict[str, Service]:
    """Untrained tiny CNNs (tests/tiny.py): for the tests about failures, fast to export."""
    plugins = tiny_plugins()
    torch.manual_seed(0)
    return {"t": Service("t", TinyCNN(10), input_shape=(3, 16, 16), plugins=plugins),
            "u": Service("u", TinyCNN(8, width=12), input_shape=(3, 16, 16), plugins=plugins)}


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    ds, _ = digits(size=SIZE)
    return ds.tensors[0][:4]


@pytest.fixture(scope="module")
def exports(services, real, tmp_path_factory) -> Iterator[dict[str, tuple[ComposedPath, object]]]:
    """Every exported path: spec -> (path, ExportResult)."""
    out = {}
    for i, spec in enumerate((ALEX_SKIP, ALEX_CROSS, MNV2_SKIP, TIMM_SKIP, TIMM_CROSS)):
        torch.manual_seed(i)
        path = ComposedPath(spec, services, link="conv1x1").eval()
        result = export_path(path, tmp_path_factory.mktemp(f"export{i}"), real_inputs=real, threads=1)
        out[spec] = (path, result)
    yield out


def _own_and_foreign(path: ComposedPath, provider: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    owned = provider_tensors(path)
    mine = dict(owned[provider])
    theirs = {k: v for p, d in owned.items() if p != provider for k, v in d.items()}
    return mine, theirs


# ----------------------------------------------------------------------------------------------
# What is written
# ----------------------------------------------------------------------------------------------
def test_skip_paths_have_one_local_file_and_no_host_file(exports) -> None:
    for spec in (ALEX_SKIP, MNV2_SKIP, TIMM_SKIP):
        _, result = exports[spec]
        assert [f.name for f in result.files] == ["local.onnx", "merged.onnx"]
        assert not [n for n in os.listdir(result.out_dir) if n.startswith("host")]
        assert result.file("local").ops[-1].startswith(result.file("local").provider)


def test_cross_path_files_follow_link_sides(exports) -> None:
    _, result = exports[ALEX_CROSS]
    names = [f.name for f in result.files]
    assert names == ["local-0.onnx", "host-mobilenet_v2.onnx", "local-1.onnx", "merged.onnx"]
    assert result.file("local-0").ops == ("alexnet.block0",)
    assert result.file("host-mobilenet_v2").ops == ("link0", "mobilenet_v2.block1", "mobilenet_v2.block2", "link1")
    assert result.file("local-1").ops == ("alexnet.block6",)
    assert result.file("merged").exporter == "compose"
    manifest = json.loads(open(os.path.join(result.out_dir, "export.json")).read())
    assert manifest["exporter"] == "dynamo" and not manifest["fallbacks"]
    assert all(f["opset"] >= 18 for f in manifest["files"])
    assert {f["name"] for f in manifest["files"]} == set(names)


def test_every_export_passes_the_checker_with_a_dynamic_batch(exports) -> None:
    for _, result in exports.values():
        for f in result.files:
            file = os.path.join(result.out_dir, f.name)
            if f.bytes < 50e6:  # export_path checked them all; re-check the small ones here
                onnx.checker.check_model(file, full_check=True)
            model = onnx.load(file, load_external_data=False)
            assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
            assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18


# ----------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------
def test_fp32_parity_on_random_and_real_inputs(exports) -> None:
    for spec, (_, result) in exports.items():
        assert result.ok, spec
        for f in result.files:
            rows = [p for p in result.parity if p.file == f.name]
            assert {(p.inputs, p.batch) for p in rows} >= {("random", 1), ("random", 5), ("real", 4)}, f.name
            assert all(p.rel <= FP32_TOLERANCE and p.scale > 0 for p in rows), rows
        if result.kind == "cross":
            assert any(p.file.startswith("chain(") for p in result.parity)


def test_part_files_chained_in_onnxruntime_equal_the_path(exports, real) -> None:
    path, result = exports[TIMM_CROSS]
    runtimes = [OrtCpu(result.path_of(p.name + ".onnx")) for p in split_path(path)]
    assert [os.path.basename(r.file) for r in runtimes] == ["local-0.onnx", "host-rn.onnx", "local-1.onnx"]
    for x in (real, torch.randn(5, 3, SIZE, SIZE)):
        y = x
        for rt in runtimes:
            y = rt.run(y)
        with torch.no_grad():
            ref = path(x)
        assert (y - ref).abs().max() <= FP32_TOLERANCE * ref.abs().max()


def test_merged_file_runs_batch_1_and_5(exports) -> None:
    path, result = exports[ALEX_CROSS]
    rt = make_runtime("ort-cpu", result.path_of("merged"))
    for batch in (1, 5):
        x = torch.randn(batch, 3, SIZE, SIZE)
        with torch.no_grad():
            ref = path(x)
        y = rt.run(x)
        assert y.shape == (batch, 10)
        assert (y - ref).abs().max() <= FP32_TOLERANCE * ref.abs().max()


# ----------------------------------------------------------------------------------------------
# Separation of providers
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [ALEX_CROSS, TIMM_CROSS])
def test_host_file_holds_no_local_tensor_and_vice_versa(exports, spec) -> None:
    path, result = exports[spec]
    for f in result.files:
        if f.role == "merged":
            continue
        file = result.path_of(f.name)
        mine, theirs = _own_and_foreign(path, f.provider)
        check = find_leaks(file, f.provider, theirs)
        assert check.ok and check.tensors_checked > 0 and check.forbidden > 0, check
        own = find_leaks(file, f.provider, mine).leaks
        # the check is not vacuous: a file does hold its own provider's tensors (the links; and
        # the blocks, except where the exporter folded batch norm into the convolutions)
        if f.role == "host" or f.provider == "alexnet":
            assert own, f.name
        if f.role == "host":
            assert any(" == link0." in m or " ~ link0." in m for m in own)
    host = result.file("host")
    _, theirs = _own_and_foreign(path, host.provider)
    assert path.spec.local in {k.split(".")[0] for k in theirs}


def test_a_link_wrapping_another_providers_block_is_refused(tiny, tmp_path) -> None:
    torch.manual_seed(0)
    spec = "t[:2] > u[2:4] > t[3:]"
    base = ComposedPath(spec, tiny, link="conv1x1")
    # an entry link (held by the host u) that runs one of the local provider's blocks
    sneaky = nn.Sequential(tiny["t"].blocks[2], nn.Conv2d(16, 24, 1))
    path = ComposedPath(spec, tiny, links=[sneaky, base.links[1]])
    assert path.link_sides[0] == "u"
    with pytest.raises(ExportError, match=r"would contain 't\.\S*2\S*weight' of provider 't'"):
        export_path(path, tmp_path / "x")
    assert list((tmp_path / "x").iterdir()) == []


def test_leak_check_sees_transposed_weights(tmp_path) -> None:
    w = torch.randn(6, 4)
    lin = nn.Linear(6, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w.t())
    export_module(lin, torch.randn(2, 6), tmp_path / "lin.onnx")
    check = find_leaks(str(tmp_path / "lin.onnx"), "someone", {"other.w": w})
    assert not check.ok and "other.w" in check.leaks[0]
    assert find_leaks(str(tmp_path / "lin.onnx"), "someone", {"other.w": torch.randn(6, 4)}).ok


# ----------------------------------------------------------------------------------------------
# Failures are errors, never wrong files
# ----------------------------------------------------------------------------------------------
class DataDependentLink(nn.Module):
    """Scales by a number numpy reads from the data: the dynamo exporter cannot trace numpy on
    its fake tensors, the TorchScript tracer bakes the number of its example in (a wrong file)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * float(np.abs(x.detach().cpu().numpy()).max())


def test_an_export_that_cannot_be_right_fails_and_leaves_nothing(tiny, tmp_path) -> None:
    torch.manual_seed(0)
    path = ComposedPath("t[:2] > t[3:]", tiny, links=[DataDependentLink(16, 16)])
    out = tmp_path / "bad"
    with pytest.raises(ExportError) as info:
        export_path(path, out)
    msg = str(info.value)
    # dynamo fails, the TorchScript exporter writes a file with the number baked in, parity catches it
    assert "local.onnx on random inputs" in msg and "TorchScript" in msg, msg
    assert list(out.iterdir()) == []  # nothing half-checked is left behind


def test_fp16_export_parity(tiny, tmp_path) -> None:
    torch.manual_seed(0)
    path = ComposedPath("t[:2] > u[2:4] > t[3:]", tiny, link="conv1x1")
    result = export_path(path, tmp_path / "fp16", fp16=True, real_inputs=digits(size=16)[0].tensors[0][:4])
    assert result.dtype == "float16" and result.ok
    for f in result.files:
        model = onnx.load(result.path_of(f.name))
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert max(p.rel for p in result.parity) < 1e-2
    assert all(c.ok for c in result.leaks)  # the fp16 files hold no other provider's tensor either


# ----------------------------------------------------------------------------------------------
# Runtimes
# ----------------------------------------------------------------------------------------------
def test_registered_runtimes(plugins) -> None:
    assert {"torch-eager", "torch-cudagraph", "ort-cpu", "ort-cuda"} <= set(plugins.runtimes.names())
    assert plugins.runtimes.owner("ort-cpu") == "runtimes"
    info = {i.name: i for i in plugins.info()}
    assert "ort-cuda" in info["runtimes"].registered["runtimes"]


def test_torch_eager_and_ort_cpu_agree(exports) -> None:
    path, result = exports[MNV2_SKIP]
    x = torch.randn(3, 3, SIZE, SIZE)
    eager = make_runtime("torch-eager", path)
    ort_rt = make_runtime("ort-cpu", result.path_of("merged"), threads=1)
    assert (eager.name, eager.device, ort_rt.name, ort_rt.device) == ("torch-eager", "cpu", "ort-cpu", "cpu")
    ref = eager.run(x)
    assert (ort_rt.run(x) - ref).abs().max() <= FP32_TOLERANCE * ref.abs().max()


def test_runtimes_reject_the_wrong_kind_of_model(exports) -> None:
    path, result = exports[MNV2_SKIP]
    with pytest.raises(ConfigError, match="ONNX file"):
        OrtCpu(path)
    with pytest.raises(ConfigError, match="nn.Module"):
        TorchEager(result.path_of("merged"))
    with pytest.raises(ConfigError, match="rejected options"):
        make_runtime("ort-cpu", result.path_of("merged"), io_binding=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_runtimes_refuse_clearly_without_cuda(exports) -> None:
    path, result = exports[MNV2_SKIP]
    merged = result.path_of("merged")
    for make in (lambda: OrtCuda(merged), lambda: OrtCuda(merged, cuda_graph=True),
                 lambda: TorchCudaGraph(path), lambda: TorchEager(path, device="cuda"),
                 lambda: make_runtime("ort-cuda", merged, io_binding=False)):
        with pytest.raises(DeviceUnavailableError, match="no fall back|does not fall back"):
            make()
    with pytest.raises(ConfigError, match="io_binding"):
        OrtCuda(merged, cuda_graph=True, io_binding=False)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
SMALL = """
[local]
name = "r18"
model = "resnet18"
task = "digits"
size = 32

[[hosts]]
name = "host"
model = "resnet18"
task = "shapes"
"""


def test_cli_exports_a_spec_with_untrained_services(tmp_path, monkeypatch) -> None:
    from codenn.cli import cli

    monkeypatch.setenv("CODENN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "small.toml").write_text(SMALL)
    out = tmp_path / "onnx"
    res = CliRunner().invoke(cli, ["export", "--spec", "r18[:2] > r18[5:]", "--out", str(out), "--config",
                                   str(tmp_path / "small.toml"), "--untrained"])
    assert res.exit_code == 0, res.output
    assert "local.onnx" in res.output and "relative" in res.output and "exporter: dynamo" in res.output
    assert sorted(os.listdir(out)) == ["export.json", "local.onnx", "merged.onnx"]
    res = CliRunner().invoke(cli, ["export", "r18[:2] > nowhere[1:2] > r18[5:]", "--out", str(tmp_path / "o2"),
                                   "--config", str(tmp_path / "small.toml"), "--untrained"])  # the old positional form
    assert res.exit_code != 0 and "nowhere" in res.output and "Traceback" not in res.output
    assert "`codenn export RUN_OR_SPEC` is deprecated" in res.output and "use --spec SPEC" in res.output


def test_cli_exports_a_run_directory(tiny, tmp_path, monkeypatch) -> None:
    """A run directory as `codenn search` writes it (run.json, a trained row, links + manifest)."""
    import codenn.search.store
    from codenn.cli import cli
    from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL
    from codenn.config.run import RunConfig, ServiceConfig
    from codenn.fileio import atomic_json
    from codenn.paths.rows import PathRow
    from codenn.search.record import LinkManifest
    from codenn.search.store import RunStore
    from codenn.train.data import split_dataset
    from codenn.train.scenario import Scenario

    local, host = tiny["t"], tiny["u"]
    splits = split_dataset(*digits(size=16), seed=0, name="digits")
    monkeypatch.setattr(codenn.search.store, "scenario_from_config", lambda run, log=print: Scenario(local, [host], splits))
    run = RunConfig(local=ServiceConfig("t", DEFAULT_LOCAL), hosts=(ServiceConfig("u", DEFAULT_HOST),))
    spec = "t[:2] > u[2:4] > t[3:]"
    path = ComposedPath(spec, [local, host], link="conv1x1")
    store = RunStore(tmp_path / "run")
    atomic_json(store.root / "run.json", {"metadata": {"run_config": run.to_dict()}, "selected": {"spec": spec}})
    store.save_links(spec, path.links, LinkManifest.from_dict({"spec": spec, "link_factories": list(path.link_factories),
                                        "link_options": {}, "fingerprints": {"t": local.fingerprint(),
                                                                             "u": host.fingerprint()}}))
    store.append_row(PathRow(spec=spec, kind="cross", status="trained", test_accuracy=0.5))
    res = CliRunner().invoke(cli, ["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "onnx")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert manifest["spec"] == spec
    assert [f["name"] for f in manifest["files"]] == ["local-0.onnx", "host-u.onnx", "local-1.onnx", "merged.onnx"]
    assert {p["inputs"] for p in manifest["parity"]} == {"random", "real"}
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "o2"),
                                   "--spec", "t[:1] > t[3:]"])
    assert res.exit_code == 1 and "no trained links" in res.output


def test_errors_are_codenn_errors() -> None:
    assert issubclass(ExportError, CodennError) and issubclass(DeviceUnavailableError, CodennError)
