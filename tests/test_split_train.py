"""Split training through a transport: same result as in-process training, nothing private crosses."""

from __future__ import annotations

import pytest
import torch

from codenn import ConfigError
from codenn.config.train import TrainConfig
from codenn.errors import HostRejectedError, PathSpecError
from codenn.remote.leg import RemotePath
from codenn.remote.segment import HostSegment
from codenn.remote.split_trainer import SplitTrainer
from codenn.train.trainer import LinkTrainer
from codenn_adapters.transports import InProcessTransport
from split_helpers import CONFIG, clone_links, tiny


@pytest.fixture(scope="module")
def t():
    return tiny()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Recording(InProcessTransport):
    """Records every tensor handed to the host and every tensor handed back."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.sent: list[tuple[str, torch.Tensor]] = []
        self.received: list[torch.Tensor] = []

    def train_forward(self, model, x, step, timeout=None):
        self.sent.append(("forward", x.detach().clone()))
        reply = super().train_forward(model, x, step, timeout)
        self.received.append(reply.output)
        return reply

    def train_backward(self, model, step, grad, timeout=None):
        self.sent.append(("backward", grad.detach().clone()))
        return super().train_backward(model, step, grad, timeout)


def test_split_training_equals_in_process_training(t) -> None:
    reference, split = t.path(), t.path()
    clone_links(reference, split)
    segment = t.segment(split)
    host_fp, local_fp = t.host.fingerprint(), t.local.fingerprint()
    trainer = LinkTrainer(reference, CONFIG, t.full_cache(), t.y)
    transport = Recording(segment)
    remote = SplitTrainer(t.local, transport, segment.name, CONFIG, t.local_cache(), t.y)
    for _ in range(2):
        assert remote.train_epochs(1) == pytest.approx(trainer.train_epochs(1), rel=1e-6)
    got = segment.link_state()
    for key, want in reference.links.state_dict().items():
        torch.testing.assert_close(got[key], want, rtol=1e-6, atol=1e-7)
    assert remote.steps == segment.steps_trained == 2 * 5
    # frozen means frozen, on both sides
    assert t.host.fingerprint() == host_fp and t.local.fingerprint() == local_fp
    # only boundary activations and output gradients went to the host, only outputs came back
    shapes = {kind: {tuple(x.shape[1:]) for k, x in transport.sent if k == kind} for kind in ("forward", "backward")}
    assert shapes == {"forward": {segment.input_spec.shape}, "backward": {segment.output_spec.shape}}
    assert all(x.dtype == torch.float32 for _, x in transport.sent)
    assert {tuple(y.shape[1:]) for y in transport.received} == {segment.output_spec.shape}
    assert remote.comm_s >= 0 and remote.host_compute_s > 0
    # and the trained path runs the same through the host as in one process
    reference.eval()
    with torch.no_grad():
        want = reference(t.x_test)
    torch.testing.assert_close(RemotePath(t.local, transport, segment.name)(t.x_test), want, rtol=1e-5, atol=1e-6)


def test_split_training_with_distillation_matches(t) -> None:
    cfg = TrainConfig(epochs=1, batch_size=64, lr=CONFIG.lr, weight_decay=CONFIG.weight_decay, distill=0.5,
                      progress=False)
    teacher = torch.randn(len(t.y), 10, generator=torch.Generator().manual_seed(1))
    reference, split = t.path(), t.path()
    clone_links(reference, split)
    segment = t.segment(split)
    LinkTrainer(reference, cfg, t.full_cache(), t.y, teacher_logits=teacher).train_epochs(1)
    SplitTrainer(t.local, InProcessTransport(segment), segment.name, cfg, t.local_cache(), t.y,
                 teacher_logits=teacher).train_epochs(1)
    for key, want in reference.links.state_dict().items():
        torch.testing.assert_close(segment.link_state()[key], want, rtol=1e-6, atol=1e-7)


def test_host_segment_holds_only_its_links(t) -> None:
    path = t.path()
    segment = t.segment(path)
    # the segment's trainable parameters are exactly the two links; the host's blocks stay frozen
    trainable = [p for p in segment.links.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in path.links.parameters())
    assert not any(p.requires_grad for p in segment.service.parameters())
    assert set(segment.link_state()) == set(path.links.state_dict())
    meta = segment.metadata()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *segment.input_spec.shape]}]
    assert meta["parameters"]["path"] == str(path.spec)
    assert "weight" not in str(meta).replace("weight_decay", "")


@pytest.mark.parametrize("spec", ["local[:2] > local[4:]", "local[:1] > host[1:2] > local[1:2] > host[3:4] > local[4:]"])
def test_other_path_shapes_are_refused(t, spec: str) -> None:
    with pytest.raises(ConfigError, match="one-visit cross path"):
        HostSegment.from_path(t.path(spec))


def test_trainer_checks_path_and_optimizer_settings(t) -> None:
    segment = t.segment(t.path())
    transport = InProcessTransport(segment)
    with pytest.raises(ConfigError, match="serves"):
        SplitTrainer(t.local, transport, segment.name, CONFIG, t.local_cache(), t.y, spec="local[:1] > host[1:4] > local[3:]")
    with pytest.raises(ConfigError, match="lr="):
        SplitTrainer(t.local, transport, segment.name, TrainConfig(lr=0.5, weight_decay=CONFIG.weight_decay),
                     t.local_cache(), t.y)
    with pytest.raises(ConfigError, match="float32"):
        SplitTrainer(t.local, transport, segment.name, TrainConfig(amp=True), t.local_cache(), t.y)
    with pytest.raises(PathSpecError):
        SplitTrainer(t.local, transport, segment.name, CONFIG, t.local_cache(), t.y, spec="nope[:1] > host[1:3] > nope[3:]")
    with pytest.raises(HostRejectedError) as info:
        transport.train_backward(segment.name, 12345, torch.zeros(2, *segment.output_spec.shape))
    assert info.value.status == 409
