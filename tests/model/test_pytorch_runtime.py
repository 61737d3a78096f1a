"""The pytorch runtime in-process, on a small network trained on scikit-learn's
iris data: a torch.export program serves with its own signature and the
module's own answers; TorchScript serves only when trusted, with a declared
signature. And the reasons for the trust rules, shown on real files: loading
TorchScript runs code that writes a file, torch.export.load unpickles a
doctored archive, and turnout refuses both before torch reads them."""

from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris

from tests.model.loading_support import loaded
from turnout.model.loader import LoadFailed


class IrisNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def forward(self, measurements: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.layers(measurements), dim=1)


class TwoHeads(IrisNet):
    def forward(self, measurements: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        probabilities = super().forward(measurements)
        return probabilities, probabilities.argmax(dim=1)


def trained(net: IrisNet) -> IrisNet:
    torch.manual_seed(0)
    iris = load_iris()
    x, y = torch.tensor(iris.data, dtype=torch.float32), torch.tensor(iris.target)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        optimiser.zero_grad()
        torch.nn.functional.nll_loss(torch.log(IrisNet.forward(net, x)), y).backward()
        optimiser.step()
    return net.eval()


def exported(net: torch.nn.Module, path: Path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


def scripted(net: torch.nn.Module) -> torch.jit.ScriptModule:
    with pytest.warns(DeprecationWarning, match="torch.jit.script` is deprecated"):  # by PyTorch, for torch.export
        return torch.jit.script(net)


def refusal(root: Path, allow_trusted: bool = False) -> str:
    """Why the iris model's version 1 does not load."""
    with pytest.raises(LoadFailed) as refused, loaded(root, "iris", allow_trusted):
        pass
    return str(refused.value)


def repository(root: Path, toml: str = "") -> Path:
    (root / "iris" / "1").mkdir(parents=True)
    (root / "iris" / "model.toml").write_text('runtime.name = "pytorch"\n' + toml)
    return root / "iris" / "1"


ROWS = load_iris().data[::10].astype(np.float32)


def test_an_exported_program_serves_its_own_signature_and_answers(tmp_path: Path) -> None:
    net = trained(IrisNet())
    exported(net, repository(tmp_path) / "model.pt2")
    with loaded(tmp_path, "iris") as version:
        described = [s.describe() for s in (*version.signature.inputs, *version.signature.outputs)]
        assert described == ["measurements FP32 [-1, 4]", "output FP32 [-1, 3]"]
        out = version.instances[0].predict({"measurements": ROWS}, ["output"])
    with torch.no_grad():
        expected = net(torch.from_numpy(ROWS)).numpy()
    np.testing.assert_allclose(out["output"], expected, rtol=1e-6)
    assert (out["output"].argmax(axis=1) == load_iris().target[::10]).mean() > 0.9  # it learnt


def test_outputs_are_named_in_order_and_a_wrong_count_is_refused(tmp_path: Path) -> None:
    net = trained(TwoHeads())
    exported(net, repository(tmp_path, '[runtime.options]\noutputs = ["probabilities", "label"]\n') / "model.pt2")
    with loaded(tmp_path, "iris") as version:
        assert [s.describe() for s in version.signature.outputs] == ["probabilities FP32 [-1, 3]", "label INT64 [-1]"]
        out = version.instances[0].predict({"measurements": ROWS}, ["label"])
    assert out["label"].tolist() == net(torch.from_numpy(ROWS))[1].tolist()
    (tmp_path / "iris" / "model.toml").write_text('runtime.name = "pytorch"\n[runtime.options]\noutputs = ["p"]\n')
    assert re.search(r"outputs names 1 outputs; the program returns 2", refusal(tmp_path))


SIGNATURE = """
[[inputs]]
name = "measurements"
datatype = "FP32"
shape = [-1, 4]

[[outputs]]
name = "probabilities"
datatype = "FP32"
shape = [-1, 3]
"""


def test_torchscript_needs_trust_and_a_declared_signature(tmp_path: Path) -> None:
    net = trained(IrisNet())
    scripted(net).save(repository(tmp_path, SIGNATURE) / "model.pt")
    message = refusal(tmp_path, allow_trusted=True)
    assert "model.pt is a TorchScript module" in message
    assert "`trusted = true` in its model.toml" in message
    (tmp_path / "iris" / "model.toml").write_text('runtime.name = "pytorch"\ntrusted = true\n' + SIGNATURE)
    with loaded(tmp_path, "iris", allow_trusted=True) as version:
        out = version.instances[0].predict({"measurements": ROWS}, ["probabilities"])
    np.testing.assert_allclose(out["probabilities"], net(torch.from_numpy(ROWS)).detach().numpy(), rtol=1e-6)
    (tmp_path / "iris" / "model.toml").write_text('runtime.name = "pytorch"\ntrusted = true\n')
    assert re.search(
        r"TorchScript, which records no tensor shapes: declare \[\[inputs\]\]", refusal(tmp_path, allow_trusted=True)
    )


class WritesOnLoad(torch.nn.Module):
    """TorchScript whose ``__setstate__`` (run by torch.jit.load) writes a file."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        written = torch.from_file(state[0], shared=True, size=4, dtype=torch.uint8)
        written.fill_(33)
        self.marker = state[0] + str(int(written[0]))  # used, or TorchScript drops the write as dead code
        self.training = state[1]

    def forward(self, measurements: torch.Tensor) -> torch.Tensor:
        return measurements


def test_loading_torchscript_runs_its_code_so_turnout_refuses_it_untrusted(tmp_path: Path) -> None:
    marker = tmp_path / "written_by_the_model"
    version_dir = repository(tmp_path, SIGNATURE.replace("[-1, 3]", "[-1, 4]").replace("probabilities", "same"))
    scripted(WritesOnLoad(str(marker))).save(version_dir / "model.pt")
    assert not marker.exists()  # saving ran no __setstate__
    assert re.search(r"TorchScript", refusal(tmp_path))
    assert not marker.exists()
    with pytest.warns(DeprecationWarning):
        torch.jit.load(str(version_dir / "model.pt"))  # what turnout would have done
    assert marker.read_bytes() == b"!!!!"


class Touch:
    """A pickle that creates a file when unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def doctored(source: Path, target: Path, marker: Path, part: str) -> None:
    """``source`` with ``part`` swapped for a pickle that touches ``marker``:
    one weight marked ``use_pickle``, or the sample inputs."""
    payload = pickle.dumps(Touch(marker))
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            inner = item.filename.split("/", 1)[1]
            if part == "weight" and inner == "data/weights/model_weights_config.json":
                config = json.loads(data)
                config["config"]["layers.0.weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif inner == {"weight": "data/weights/weight_0", "sample inputs": "data/sample_inputs/model.pt"}[part]:
                data = payload
            copy.writestr(item, data)


@pytest.mark.parametrize(
    ("part", "named"),
    [("weight", "layers.0.weight (a pickled payload)"), ("sample inputs", "sample inputs that only a full unpickler")],
)
def test_a_doctored_export_archive_is_refused_before_torch_unpickles_it(tmp_path: Path, part: str, named: str) -> None:
    marker = tmp_path / "unpickled"
    exported(trained(IrisNet()), tmp_path / "genuine.pt2")
    doctored(tmp_path / "genuine.pt2", repository(tmp_path) / "model.pt2", marker, part)
    message = refusal(tmp_path)
    assert named in message and "refused without `trusted = true`" in message
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - torch fails after unpickling; the file shows it unpickled
        torch.export.load(str(tmp_path / "iris/1/model.pt2"))
    assert marker.exists()


@torch.library.custom_op("turnout_test::peek", mutates_args=())
def peek(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@peek.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class CallsACustomOperator(torch.nn.Module):
    def forward(self, measurements: torch.Tensor) -> torch.Tensor:
        return peek(measurements) + 1


def test_a_graph_calling_an_operator_outside_aten_is_refused_unless_trusted(tmp_path: Path) -> None:
    exported(CallsACustomOperator(), repository(tmp_path) / "model.pt2")
    assert re.search(r"model.pt2 calls \['turnout_test::peek'\], which do more than compute", refusal(tmp_path))
    (tmp_path / "iris" / "model.toml").write_text('runtime.name = "pytorch"\ntrusted = true\n')
    with loaded(tmp_path, "iris", allow_trusted=True) as version:
        out = version.instances[0].predict({"measurements": ROWS}, ["output"])
    np.testing.assert_allclose(out["output"], ROWS + 1)


def test_a_device_this_machine_lacks_falls_back_to_the_cpu_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not torch.cuda.is_available()  # this machine: CPU only
    exported(trained(IrisNet()), repository(tmp_path, '[runtime.options]\ndevice = "cuda"\n') / "model.pt2")
    with caplog.at_level(logging.WARNING, logger="turnout.registry"), loaded(tmp_path, "iris") as version:
        out = version.instances[0].predict({"measurements": ROWS}, ["output"])
    assert out["output"].shape == (len(ROWS), 3)
    assert "device 'cuda' is not available here; running on the CPU" in caplog.text
    (tmp_path / "iris" / "model.toml").write_text('runtime.name = "pytorch"\n[runtime.options]\ndevice = "tpu"\n')
    assert re.search(r"device 'tpu': one of 'cpu', 'cuda', 'cuda:N', 'mps'", refusal(tmp_path))


def test_an_empty_version_and_a_broken_archive_say_what_to_save(tmp_path: Path) -> None:
    version_dir = repository(tmp_path)
    assert re.search(r"neither model.pt2 \(torch.export.save\) nor model.pt \(torch.jit.save\)", refusal(tmp_path))
    (version_dir / "model.pt2").write_bytes(b"not a zip")
    assert re.search(r"model\.pt2 is not a torch\.export archive", refusal(tmp_path))
