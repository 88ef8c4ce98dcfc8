"""What the layered core offers besides moving modules: configuration from one flag table, one
ServerConfig, the typed run record, the data plane without HTTP and its one status table, one
remote leg for routes and remote paths, inference-only servers, and the old spellings that still
work for one release with a warning."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

from codenn.config import SEARCH_FLAGS, SERVER_FLAGS, Flag, RunConfig, ServerConfig, apply_flags
from codenn.errors import (
    BoundaryMismatchError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    ModelNotFoundError,
    NonFiniteError,
    PayloadTooLargeError,
    UnauthenticatedError,
)
from codenn.paths.rows import PathRow
from codenn.remote.coordinator import Coordinator, Route, RouteInfo
from codenn.remote.dataplane import DataPlane
from codenn.remote.leg import RemoteLeg, RemotePath
from codenn.remote.served_model import ServedModel, TrainableModel
from codenn.remote.split_state import SegmentStateError
from codenn.search.record import LinkManifest, RunRecord, SearchState
from codenn_adapters import oip
from codenn_adapters.host_server import STATUS, create_app, status_of
from codenn_adapters.transports import InProcessTransport
from split_helpers import SPEC, TOKENS, tiny

BEARER = {"Authorization": f"Bearer {TOKENS['local']}"}


# -- configuration ---------------------------------------------------------------------------------
def test_flags_set_nested_fields_at_once_and_validate_the_result() -> None:
    run = apply_flags(RunConfig(), SEARCH_FLAGS, {"epochs": 7, "latency_bound_us": 900.0, "quiet": True,
                                                   "executor": "ray", "workers": 3, "strategy": None})
    assert run.search.train.epochs == 7 and run.search.cost.latency_bound_us == 900.0
    assert run.search.train.progress is False and (run.executor.name, run.executor.workers) == ("ray", 3)
    assert run.search.strategy == RunConfig().search.strategy  # None: left as the configuration has it
    with pytest.raises(ConfigError, match="out of range"):
        apply_flags(RunConfig(), SEARCH_FLAGS, {"epochs": 0})
    # several fields of one object change together: a TLS pair is never checked half-set
    server = apply_flags(ServerConfig(), SERVER_FLAGS, {"ssl_keyfile": "k.pem", "ssl_certfile": "c.pem", "port": 9})
    assert (server.ssl_keyfile, server.ssl_certfile, server.port, server.scheme) == ("k.pem", "c.pem", 9, "https")
    with pytest.raises(ConfigError, match="--ssl-keyfile and --ssl-certfile go together"):
        apply_flags(ServerConfig(), SERVER_FLAGS, {"ssl_keyfile": "k.pem"})
    with pytest.raises(ConfigError, match="has no field"):
        apply_flags(RunConfig(), [Flag("--nope", "search.nope", "a typo in a table")], {"nope": 1})


@pytest.mark.parametrize("bad, match", [
    ({"port": 0}, "port 0"), ({"max_bytes": 10}, "at least 1024"), ({"body_timeout_s": 0}, "must be > 0"),
    ({"limit_concurrency": 0}, ">= 1"), ({"checkpoint_every": 0}, ">= 1"),
])
def test_server_config_refuses_what_no_server_can_run(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ServerConfig(**bad)
    assert ServerConfig(bind="0.0.0.0").clear_text_beyond_loopback and not ServerConfig().clear_text_beyond_loopback


# -- the run record --------------------------------------------------------------------------------
def test_run_record_and_manifest_round_trip_and_read_older_forms() -> None:
    t = tiny()
    original = PathRow(spec="local[:]", kind="original", status="original", val_accuracy=0.9, cost=1.2)
    record = RunRecord(RunConfig(), "abc", {"strategy": "fast"}, {"local": t.local.card}, {"name": "digits"},
                       original, None, "keep", ("local[:]",), {"paths": 3}, {"local": {"epochs_run": 4}},
                       {"note": "mine"})
    back = RunRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert back == record and back.to_dict()["metadata"]["note"] == "mine"
    # a hand-written or older record: missing keys take defaults, rows know their status by role
    old = RunRecord.from_dict({"metadata": {"run_config": RunConfig().to_dict()}, "selected": {"spec": SPEC}})
    assert old.selected is not None and old.selected.status == "trained" and old.original is None
    assert RunRecord.from_dict({}).run_config is None
    with pytest.raises(ConfigError, match="must be a JSON object"):
        RunRecord.from_dict({"metadata": "run_config"})
    manifest = LinkManifest(SPEC, ("conv1x1", "conv1x1"), ("host", "host"), {}, {"local": "f" * 64}, None, 7)
    assert LinkManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    with pytest.raises(ConfigError, match="link_factories"):
        LinkManifest.from_dict({"spec": SPEC})
    state = SearchState(2, (SPEC,), {SPEC: 1})
    assert SearchState.from_dict(state.to_dict()) == state


# -- the data plane without HTTP, and the one status table ---------------------------------------------
def test_the_data_plane_checks_every_request_before_any_model_runs() -> None:
    t = tiny()
    seg = t.segment(t.path())
    plane = DataPlane([seg], tokens=TOKENS, config=ServerConfig(max_response_bytes=16384))
    caller = plane.authenticate(BEARER["Authorization"])
    assert caller.name == "local" and isinstance(seg, TrainableModel)
    for header in ("", "Basic abc", "Bearer not-a-token"):
        with pytest.raises(UnauthenticatedError) as err:
            plane.authenticate(header)
        assert err.value.headers == {"WWW-Authenticate": "Bearer"}
    with pytest.raises(ModelNotFoundError, match=r"models you may use here: \['local_1_host"):
        plane.model("nope", caller, "infer")
    with pytest.raises(ForbiddenError, match="provider 'other' may not train"):
        plane.trainable(seg.name, plane.authenticate(f"Bearer {TOKENS['other']}"))
    x = seg.input_spec.example(batch=2)
    with pytest.raises(BoundaryMismatchError, match="must have shape"):
        plane.infer(seg, x[:, :1])
    bad = x.clone()
    bad.view(-1)[3] = float("nan")
    with pytest.raises(NonFiniteError, match="1 non-finite"):
        plane.infer(seg, bad)
    with pytest.raises(PayloadTooLargeError, match="send at most"):
        plane.infer(seg, seg.input_spec.example(batch=64))
    assert plane.infer(seg, x).output.shape == (2, *seg.output_spec.shape)
    with pytest.raises(BoundaryMismatchError, match="integer parameters.step"):
        plane.step_of({"step": True})
    refused = DataPlane([seg], tokens=TOKENS, training_refused="one replica only")
    with pytest.raises(ConflictError, match="off on this host: one replica only"):
        refused.trainable(seg.name, caller)
    assert refused.server_metadata("0")["extensions"] == ["binary_tensor_data"]
    assert plane.server_metadata("0") == {"name": "codenn-host", "version": "0",
                                          "extensions": ["binary_tensor_data", "codenn_split_training"]}


def test_every_refusal_has_one_status() -> None:
    cases = {UnauthenticatedError("x"): 401, ForbiddenError("x"): 403, ModelNotFoundError("x"): 404,
             ConflictError("x"): 409, SegmentStateError("x"): 409, PayloadTooLargeError("x"): 413,
             BoundaryMismatchError("x"): 422, NonFiniteError("x"): 422, oip.ProtocolError("x", 400): 400,
             ConfigError("x"): None}
    assert {type(e).__name__: status_of(e) for e in cases} == {type(e).__name__: s for e, s in cases.items()}
    assert sorted(set(STATUS.values())) == [400, 401, 403, 404, 408, 409, 413, 422]


class InferenceOnly:
    """A served model that offers no split training (as the local provider's server)."""

    def __init__(self, seg: ServedModel) -> None:
        self.seg = seg
        self.name, self.local_name = "only", seg.local_name
        self.input_spec, self.output_spec = seg.input_spec, seg.output_spec

    def metadata(self) -> dict:
        return {"name": self.name}

    def serve(self, x: torch.Tensor):
        return self.seg.serve(x)


def test_an_inference_only_model_needs_no_training_stubs() -> None:
    t = tiny()
    model = InferenceOnly(t.segment(t.path()))
    assert isinstance(model, ServedModel) and not isinstance(model, TrainableModel)
    with TestClient(create_app([model], tokens=TOKENS, role="local")) as client:
        assert client.get("/v2").json() == {"name": "codenn-local", "version": client.get("/v2").json()["version"],
                                            "extensions": ["binary_tensor_data"]}
        body, headers = oip.encode_request({"input": model.input_spec.example(batch=1)}, parameters={"step": 0})
        r = client.post("/v2/models/only/train/forward", content=body, headers={**BEARER, **headers})
        assert r.status_code == 404 and "serves inference only" in r.json()["error"]
        r = client.post("/v2/models/only/infer", content=body, headers={**BEARER, **headers})
        assert r.status_code == 200


# -- one remote leg ----------------------------------------------------------------------------------
def test_routes_and_remote_paths_run_through_the_same_checked_leg() -> None:
    t = tiny()
    path = t.path().eval()
    seg = t.segment(path)
    transport = InProcessTransport([seg])
    remote = RemotePath(t.local, transport, seg.name)
    route = Route.through_host(t.local, SPEC, transport, seg.name,
                               RouteInfo(SPEC, 0.5, 100.0, 100.0, host="host"))
    assert isinstance(remote.leg, RemoteLeg) and isinstance(route.leg, RemoteLeg)
    assert (remote.leg.lout, remote.leg.lin, remote.leg.host) == (route.leg.lout, route.leg.lin, route.leg.host)
    x = t.x_test[:4]
    with torch.inference_mode():
        want = path(x)
    assert torch.allclose(remote(x), want, atol=1e-5) and torch.allclose(route.leg(x), want, atol=1e-5)
    coordinator = Coordinator([Route.local(t.path("local[:]"), RouteInfo("local[:]", 0.9, 500.0)), route], 0.9)
    out, decision = coordinator.infer(x)
    assert out.shape == want.shape and decision.route in ("local[:]", SPEC)
    with pytest.raises(ConfigError, match="run= .* or leg="):
        Route(RouteInfo(SPEC, 0.5, 1.0, host="host"))


# -- old spellings, one release ------------------------------------------------------------------------
def test_the_old_path_name_warns_and_is_the_composed_path() -> None:
    import codenn.paths

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codenn.paths._warned.clear()
        old = codenn.paths.Path
    assert old is codenn.paths.ComposedPath and any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_old_command_line_spellings_still_work_with_a_warning(tmp_path) -> None:
    from codenn.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["evaluate", str(tmp_path / "nothing")])
    assert "`codenn evaluate RUN` is deprecated" in res.output and "not a codenn search run" in res.output
    res = runner.invoke(cli, ["serve-host", "--links", str(tmp_path), "--service", "h", "--token-file",
                              str(tmp_path / "t.json")])
    assert res.exit_code == 2  # --token-file does not exist: click refuses before anything runs
    (tmp_path / "t.json").write_text(json.dumps(TOKENS))
    res = runner.invoke(cli, ["serve-host", "--links", str(tmp_path), "--service", "h", "--token-file",
                              str(tmp_path / "t.json"), "--host", "127.0.0.1", "--check"])
    assert "--links is deprecated" in res.output and "use --run" in res.output
    assert "--host is deprecated" in res.output and "use --bind" in res.output
    assert "not a codenn search run" in res.output and "Traceback" not in res.output
