"""Split training survives a SIGKILLed host: checkpoints, --resume, and a trainer that goes on
from the step the host holds, ending with the same links as uninterrupted in-process training."""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import load_file

from codenn.errors import ConfigError
from codenn.remote.split_trainer import SplitTrainer
from codenn.train.trainer import LinkTrainer
from codenn_adapters.transports import HttpTransport
from split_helpers import CONFIG, TOKENS, HostProcess, clone_links, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class KillAfter(HttpTransport):
    """Kills the host (SIGKILL) right after the ``n``-th acknowledged backward and restarts it with
    ``--resume`` in the background, as an operator's supervisor would."""

    def __init__(self, host: HostProcess, n: int, **kw) -> None:
        super().__init__(host.url, **kw)
        self.host, self.n, self.backwards = host, n, 0
        self.restarted = threading.Event()

    def train_backward(self, model, step, grad, timeout=None):
        seconds = super().train_backward(model, step, grad, timeout)
        self.backwards += 1
        if self.backwards == self.n:
            self.host.kill()

            def again() -> None:
                self.host.restart(resume=True)
                self.restarted.set()

            threading.Thread(target=again, daemon=True).start()
        return seconds


def test_split_training_survives_host_kills_and_a_trainer_restart(tmp_path) -> None:
    t = tiny()
    path = t.path()
    reference = t.path()
    clone_links(path, reference)
    ckpt, state = tmp_path / "host-ckpt", tmp_path / "trainer.json"
    host = HostProcess(t, path, tmp_path / "host", save_dir=ckpt, checkpoint_every=2)
    try:
        host.wait_ready()
        # 1) one epoch (5 steps; the host checkpoints after steps 2 and 4), then the host is killed
        with HttpTransport(host.url, token=TOKENS["local"], timeout=30) as tr:
            first = SplitTrainer(t.local, tr, host.name, CONFIG, t.local_cache(), t.y)
            first.fit(1, checkpoint=state, checkpoint_every=1)
            assert first.steps == 5
        host.kill()
        host.restart(resume=True)
        host.wait_ready()
        # 2) a new trainer (the local side restarted too) resumes from its file and the host's step:
        #    the host holds 4 steps, so one step is redone; then the host is killed mid-run again
        with KillAfter(host, 3, token=TOKENS["local"], timeout=30) as tr:
            second = SplitTrainer(t.local, tr, host.name, CONFIG, t.local_cache(), t.y)
            second.fit(3, checkpoint=state, checkpoint_every=1, wait_for_host_s=90)
            assert tr.restarted.is_set()
            held = tr.train_state(host.name)
        assert second.steps == 15 and held["steps_trained"] == 15 and held["next_step"] == 15
        # first kill: step 5 lost; second kill after step 7 (4 + 3), checkpoint at 6: step 7 lost
        assert second.lost_steps == 2 <= 2 * 2
    finally:
        host.stop()  # SIGTERM: the shutdown hook writes the final checkpoint
    saved = load_file(str(ckpt / f"{host.name}.safetensors"))
    LinkTrainer(reference, CONFIG, t.full_cache(), t.y).train_epochs(3)
    for key, want in reference.links.state_dict().items():
        torch.testing.assert_close(saved[key], want, rtol=1e-5, atol=1e-6)


def test_a_trainer_checkpoint_of_another_run_is_refused(tmp_path) -> None:
    from codenn_adapters.transports import InProcessTransport

    t = tiny()
    seg = t.segment(t.path())
    file = tmp_path / "trainer.json"
    file.write_text('{"format": "codenn-split-trainer/1", "model": "x"}')
    trainer = SplitTrainer(t.local, InProcessTransport(seg), seg.name, CONFIG, t.local_cache(), t.y)
    with pytest.raises(ConfigError, match="another run"):
        trainer.fit(1, checkpoint=file)
