"""``model.toml``: defaults, every field, and errors that say where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout.errors import ConfigError
from turnout.model.config import (
    BatchingConfig,
    InstancesConfig,
    ModelConfig,
    RuntimeConfig,
    VersionPolicy,
    load_config,
)
from turnout.model.repository import ModelRepository, ModelSource
from turnout.model.signature import Signature, TensorSpec

FULL = """\
max_batch_size = 64
warmup = false

[version_policy]
specific = [1, 3]

[batching]
max_queue_delay_ms = 1.5
preferred_batch_sizes = [16, 32]
max_queue_size = 100
timeout_ms = 250

[instances]
count = 2

[runtime]
name = "onnx"

[runtime.options]
intra_op_threads = 0
inter_op_threads = 3
graph_level = "basic"

[[inputs]]
name = "input"
datatype = "FP32"
shape = [-1, 30]

[[inputs]]
name = "mask"
datatype = "BOOL"
shape = [-1]

[[outputs]]
name = "label"
datatype = "INT64"
shape = [-1]

[[outputs]]
name = "probabilities"
datatype = "FP32"
shape = [-1, 2]
"""

TENSOR = """
[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 4]
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    data = text if isinstance(text, bytes) else text.encode()
    (tmp_path / "model.toml").write_bytes(data)
    return tmp_path


def config_error(tmp_path: Path, text: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    error = caught.value
    assert error.file == str(tmp_path / "model.toml")
    return error


# ---------------------------------------------------------------- defaults and every field


def assert_defaults(config: ModelConfig) -> None:
    assert config.runtime == RuntimeConfig(name="onnx", options={})
    assert config.max_batch_size is None
    assert config.warmup is True
    assert config.version_policy == VersionPolicy(latest=1)
    assert config.batching == BatchingConfig(
        max_queue_delay_ms=0.0, preferred_batch_sizes=[], max_queue_size=1024, timeout_ms=30_000.0
    )
    assert config.instances == InstancesConfig(count=1, niceness=0)
    assert config.inputs is None
    assert config.outputs is None
    assert config.declared_signature() is None


def test_no_model_toml_means_defaults(tmp_path: Path) -> None:
    assert_defaults(load_config(tmp_path))


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[batching]\n[instances]\n"])
def test_an_empty_model_toml_means_defaults(tmp_path: Path, text: str) -> None:
    assert_defaults(load_config(write(tmp_path, text)))


def test_every_field(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))

    assert config.runtime == RuntimeConfig(
        name="onnx", options={"intra_op_threads": 0, "inter_op_threads": 3, "graph_level": "basic"}
    )
    assert config.max_batch_size == 64
    assert config.warmup is False
    assert config.version_policy == VersionPolicy(specific=[1, 3])
    assert config.batching == BatchingConfig(
        max_queue_delay_ms=1.5, preferred_batch_sizes=[16, 32], max_queue_size=100, timeout_ms=250.0
    )
    assert config.instances == InstancesConfig(count=2)
    assert config.declared_signature() == Signature(
        inputs=(TensorSpec("input", "FP32", (-1, 30)), TensorSpec("mask", "BOOL", (-1,))),
        outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 2))),
    )


def test_sections_may_set_only_some_fields(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[batching]\nmax_queue_delay_ms = 2\n[instances]\ncount = 4\n"))

    assert config.batching.max_queue_delay_ms == 2.0
    assert config.batching.max_queue_size == 1024
    assert config.instances.count == 4
    assert config.instances.niceness == 0


def test_inputs_without_outputs_declare_no_outputs(tmp_path: Path) -> None:
    signature = load_config(write(tmp_path, TENSOR)).declared_signature()

    assert signature == Signature(inputs=(TensorSpec("x", "FP32", (-1, 4)),), outputs=())


def test_outputs_without_inputs_are_declared(tmp_path: Path) -> None:
    text = '[[outputs]]\nname = "y"\ndatatype = "FP32"\nshape = [-1]\n'
    signature = load_config(write(tmp_path, text)).declared_signature()

    assert signature == Signature(inputs=(), outputs=(TensorSpec("y", "FP32", (-1,)),))


def test_a_tensor_name_declared_twice(tmp_path: Path) -> None:
    tensor = '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1]\n'
    error = config_error(tmp_path, tensor + tensor)

    assert "['x'] declared more than once" in error.reason


# ---------------------------------------------------------------- errors: where and why


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("max_batch = 8\n", "max_batch"),
        ("[batching]\nmax_delay_ms = 1\n", "batching.max_delay_ms"),
        ("[version_policy]\nlatest = 1\nnewest = 2\n", "version_policy.newest"),
        ("[instances]\ngpus = 1\n", "instances.gpus"),
        ("[runtime]\nlevel = 'all'\n", "runtime.level"),
        (TENSOR + "dtype = 'FP32'\n", "inputs[0].dtype"),
        (TENSOR + TENSOR.replace("inputs", "outputs") + "dims = [1]\n", "outputs[0].dims"),
    ],
)
def test_an_unknown_field_is_an_error(tmp_path: Path, text: str, field: str) -> None:
    error = config_error(tmp_path, text)

    assert error.field == field
    assert error.reason == "unknown field"
    assert str(error) == f"{tmp_path / 'model.toml'}: {field}: unknown field"


def test_bad_toml_says_where(tmp_path: Path) -> None:
    error = config_error(tmp_path, 'runtime = "onnx"\nmax_batch_size = \nwarmup = true\n')

    assert error.field is None
    assert error.reason.startswith("not valid TOML: ")
    assert "line 2" in error.reason
    assert str(error) == f"{tmp_path / 'model.toml'}: {error.reason}"


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    error = config_error(tmp_path, b'runtime = "\xff"\n')

    assert error.field is None
    assert error.reason.startswith("cannot be read: ")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('max_batch_size = "many"\n', "max_batch_size"),
        ('max_batch_size = "8"\n', "max_batch_size"),
        ("max_batch_size = 8.0\n", "max_batch_size"),
        ("max_batch_size = true\n", "max_batch_size"),
        ("max_batch_size = -1\n", "max_batch_size"),
        ('warmup = "maybe"\n', "warmup"),
        ("warmup = 1\n", "warmup"),
        ("runtime = 3\n", "runtime"),
        ("version_policy = 3\n", "version_policy"),
        ("[version_policy]\nlatest = 0\n", "version_policy.latest"),
        ("[version_policy]\nall = 'yes'\n", "version_policy.all"),
        ("[version_policy]\nspecific = [0]\n", "version_policy.specific[0]"),
        ("[version_policy]\nspecific = 2\n", "version_policy.specific"),
        ("[batching]\nmax_queue_delay_ms = -1\n", "batching.max_queue_delay_ms"),
        ("[batching]\nmax_queue_delay_ms = '1'\n", "batching.max_queue_delay_ms"),
        ("[batching]\npreferred_batch_sizes = [4, 0]\n", "batching.preferred_batch_sizes[1]"),
        ("[batching]\npreferred_batch_sizes = 4\n", "batching.preferred_batch_sizes"),
        ("[batching]\nmax_queue_size = 0\n", "batching.max_queue_size"),
        ("[batching]\ntimeout_ms = 0\n", "batching.timeout_ms"),
        ("[instances]\ncount = 0\n", "instances.count"),
        ("[instances]\ncount = 65\n", "instances.count"),
        ("runtime = 3\n", "runtime"),
        ("[runtime]\nname = ''\n", "runtime.name"),
        ("[runtime]\noptions = 1\n", "runtime.options"),
        ('inputs = "x"\n', "inputs"),
        (TENSOR.replace("[-1, 4]", "[-1, 'a']"), "inputs[0].shape[1]"),
        (TENSOR.replace("[-1, 4]", "[-2, 4]"), "inputs[0].shape"),
        (TENSOR.replace('"x"', '""'), "inputs[0].name"),
        (TENSOR.replace('name = "x"\n', ""), "inputs[0].name"),
    ],
)
def test_a_wrong_value_names_its_field(tmp_path: Path, text: str, field: str) -> None:
    error = config_error(tmp_path, text)

    assert error.field == field
    assert error.reason
    assert str(error) == f"{tmp_path / 'model.toml'}: {field}: {error.reason}"


def test_an_unknown_datatype(tmp_path: Path) -> None:
    error = config_error(tmp_path, TENSOR.replace('"FP32"', '"FP8"'))

    assert error.field == "inputs[0].datatype"
    assert error.reason.startswith("unknown datatype 'FP8'; one of [")
    assert "'FP16'" in error.reason


def test_a_negative_dimension_explains_itself(tmp_path: Path) -> None:
    error = config_error(tmp_path, TENSOR.replace("[-1, 4]", "[-3]"))

    assert error.reason == "dimensions are sizes >= 0, or -1 for any size"


# ---------------------------------------------------------------- version policy


@pytest.mark.parametrize(
    "text",
    [
        "[version_policy]\n",
        "[version_policy]\nall = false\n",
        "[version_policy]\nlatest = 1\nall = true\n",
        "[version_policy]\nlatest = 2\nspecific = [1]\n",
        "[version_policy]\nall = true\nspecific = [1]\n",
    ],
)
def test_version_policy_needs_exactly_one_choice(tmp_path: Path, text: str) -> None:
    error = config_error(tmp_path, text)

    assert error.field == "version_policy"
    assert error.reason == "set exactly one of latest = N, all = true, specific = [versions]"


@pytest.mark.parametrize(
    ("text", "available", "selected"),
    [
        ("latest = 1", [3, 1, 2], [3]),
        ("latest = 2", [7, 1, 3], [3, 7]),
        ("latest = 5", [2, 1], [1, 2]),
        ("all = true", [10, 2, 1], [1, 2, 10]),
        ("specific = [3, 1]", [1, 2, 3], [1, 3]),
        ("specific = [2, 9]", [1, 2, 3], [2]),
        ("specific = [9]", [1, 2, 3], []),
        ("specific = []", [1, 2], []),
        ("latest = 1\nall = false", [4, 5], [5]),
    ],
)
def test_version_policy_select(tmp_path: Path, text: str, available: list[int], selected: list[int]) -> None:
    policy = load_config(write(tmp_path, f"[version_policy]\n{text}\n")).version_policy

    assert policy.select(available) == selected


def test_the_default_policy_serves_the_latest_version() -> None:
    assert ModelConfig().version_policy.select([1, 4, 2]) == [4]


# ---------------------------------------------------------------- batching and the batch axis


def test_preferred_batch_sizes_beyond_max_batch_size(tmp_path: Path) -> None:
    error = config_error(tmp_path, "max_batch_size = 16\n[batching]\npreferred_batch_sizes = [8, 32, 64]\n")

    assert error.field is None
    assert error.reason == "preferred_batch_sizes [32, 64] exceed max_batch_size 16"


def test_preferred_batch_sizes_may_reach_max_batch_size(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "max_batch_size = 16\n[batching]\npreferred_batch_sizes = [8, 16]\n"))

    assert config.batching.preferred_batch_sizes == [8, 16]


@pytest.mark.parametrize(
    ("tensors", "kind", "name"),
    [
        (TENSOR.replace("[-1, 4]", "[1, 4]"), "inputs", "x"),
        (TENSOR.replace("[-1, 4]", "[]"), "inputs", "x"),
        (TENSOR + TENSOR.replace("inputs", "outputs").replace('"x"', '"y"').replace("[-1, 4]", "[4]"), "outputs", "y"),
    ],
)
def test_with_max_batch_size_the_first_dimension_must_be_variable(
    tmp_path: Path, tensors: str, kind: str, name: str
) -> None:
    error = config_error(tmp_path, "max_batch_size = 8\n" + tensors)

    assert error.field is None
    assert error.reason == (
        f"{kind} '{name}': with max_batch_size > 0 the first dimension is the batch axis and must be -1"
    )


def test_without_batching_fixed_first_dimensions_are_fine(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "max_batch_size = 0\n" + TENSOR.replace("[-1, 4]", "[1, 4]")))

    signature = config.declared_signature()
    assert signature is not None
    assert signature.inputs == (TensorSpec("x", "FP32", (1, 4)),)


@pytest.mark.parametrize(
    ("text", "field", "instead"),
    [
        ("[instances]\nintra_op_threads = 2\n", "instances.intra_op_threads", "[runtime.options] intra_op_threads"),
        ("[instances]\nexecution_mode = 'parallel'\n", "instances.execution_mode", "[runtime.options] execution_mode"),
        ("[optimization]\ngraph_level = 'basic'\n", "optimization.graph_level", "[runtime.options] graph_level"),
    ],
)
def test_a_moved_onnx_key_names_its_new_place(tmp_path: Path, text: str, field: str, instead: str) -> None:
    error = config_error(tmp_path, text)

    assert error.field == field
    assert instead in error.reason


def test_runtime_options_are_checked_by_the_runtime_when_the_model_is_read(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    repository = ModelRepository(tmp_path)

    def read(text: str) -> ModelSource:
        (tmp_path / "m" / "model.toml").write_text(text)
        return repository.read("m")

    assert read("[runtime.options]\ngraph_level = 'basic'\n").options.graph_level == "basic"
    assert read('runtime = "onnx"\n').options.intra_op_threads == 1
    for text, field in (
        ("[runtime.options]\ngraph_level = 'max'\n", "runtime.options.graph_level"),
        ("[runtime.options]\nthreads = 2\n", "runtime.options.threads"),
        ("[runtime.options]\nintra_op_threads = -1\n", "runtime.options.intra_op_threads"),
    ):
        with pytest.raises(ConfigError) as caught:
            read(text)
        assert caught.value.field == field
    with pytest.raises(ConfigError, match="unknown runtime 'tensorflow'; one of") as caught:
        read('runtime = "tensorflow"\n')
    assert caught.value.field == "runtime"


def test_a_runtime_named_beside_its_options_table_gets_a_hint(tmp_path: Path) -> None:
    error = config_error(tmp_path, 'runtime = "onnx"\n[runtime.options]\nintra_op_threads = 2\n')
    assert 'name the runtime in its table: [runtime] name = "onnx"' in error.reason
    assert load_config(write(tmp_path, 'runtime.name = "onnx"\n[runtime.options]\nintra_op_threads = 2\n')).runtime == (
        RuntimeConfig(name="onnx", options={"intra_op_threads": 2})
    )


def test_a_top_level_key_written_under_a_table_says_where_it_belongs(tmp_path: Path) -> None:
    """Appended to the end of the example's model.toml, max_batch_size lands in [version_policy]."""
    error = config_error(tmp_path, 'runtime = "onnx"\n\n[version_policy]\nlatest = 1\nmax_batch_size = 8\n')
    assert error.field == "version_policy.max_batch_size"
    assert error.reason == (
        "unknown field; max_batch_size is a top-level key: write it above the first [table] "
        "(a key belongs to the table above it)"
    )
