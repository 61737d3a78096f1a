"""validate(): a decoded request checked against a model's signature."""

from __future__ import annotations

import numpy as np
import pytest

from turnout.errors import Code, InvalidRequest
from turnout.model.signature import Signature, TensorSpec
from turnout.protocol.datatypes import to_numpy
from turnout.protocol.types import InferenceRequest, InferInput, RequestedOutput
from turnout.serving.validation import ValidatedRequest, validate

BATCHED = Signature(
    inputs=(TensorSpec("image", "FP32", (-1, 3)), TensorSpec("mask", "INT64", (-1,))),
    outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("scores", "FP32", (-1, 2))),
)
# max_batch_size 0: the first dimension is not a batch axis
UNBATCHED = Signature(
    inputs=(TensorSpec("tokens", "INT32", (-1, 4)), TensorSpec("lengths", "INT32", (-1,))),
    outputs=(TensorSpec("out", "FP32", (-1,)),),
)


def tensor(name: str, datatype: str, shape: tuple[int, ...]) -> InferInput:
    return InferInput(name, datatype, shape, np.zeros(shape, dtype=to_numpy(datatype)))


def image(rows: int = 2) -> InferInput:
    return tensor("image", "FP32", (rows, 3))


def mask(rows: int = 2) -> InferInput:
    return tensor("mask", "INT64", (rows,))


def request(*inputs: InferInput, outputs: list[str] | None = None) -> InferenceRequest:
    requested = None if outputs is None else [RequestedOutput(name) for name in outputs]
    return InferenceRequest("m", None, list(inputs), outputs=requested)


def rejected(req: InferenceRequest, signature: Signature = BATCHED, max_batch_size: int = 8) -> str:
    with pytest.raises(InvalidRequest) as caught:
        validate(req, signature, max_batch_size)
    assert caught.value.code is Code.INVALID
    return caught.value.message


def test_a_valid_request_gives_the_feed_and_every_output() -> None:
    first, second = image(), mask()

    validated = validate(request(second, first), BATCHED, 8)

    assert validated == ValidatedRequest({"image": first.data, "mask": second.data}, ("label", "scores"))
    assert validated.inputs["image"] is first.data


@pytest.mark.parametrize("rows", [1, 5, 8])
def test_the_wildcard_dimension_takes_any_size(rows: int) -> None:
    validated = validate(request(image(rows), mask(rows)), BATCHED, 8)

    assert validated.inputs["image"].shape == (rows, 3)


def test_unknown_input() -> None:
    message = rejected(request(image(), mask(), tensor("extra", "FP32", (2,))))

    assert message == "unknown input 'extra'; the model takes 'image', 'mask'"


def test_duplicate_input() -> None:
    assert rejected(request(image(), mask(), image())) == "input 'image' is given twice"


@pytest.mark.parametrize("datatype", ["FP64", "FP16", "INT32", "BYTES"])
def test_wrong_datatype(datatype: str) -> None:
    message = rejected(request(tensor("image", datatype, (2, 3)), mask()))

    assert message == f"input 'image' must be FP32, got {datatype}"


@pytest.mark.parametrize("shape", [(2, 4), (2, 0), (2, 1)])
def test_wrong_shape(shape: tuple[int, int]) -> None:
    message = rejected(request(tensor("image", "FP32", shape), mask()))

    assert message == f"input 'image' has shape [{shape[0]}, {shape[1]}], the model expects [-1, 3]"


@pytest.mark.parametrize(("shape", "text"), [((3,), "[3]"), ((2, 3, 1), "[2, 3, 1]"), ((), "[]")])
def test_rank_mismatch(shape: tuple[int, ...], text: str) -> None:
    message = rejected(request(tensor("image", "FP32", shape), mask()))

    assert message == f"input 'image' has shape {text}, the model expects [-1, 3]"


def test_inputs_disagreeing_on_the_batch_size() -> None:
    message = rejected(request(image(2), mask(3)))

    assert message == "inputs disagree on the batch size: 'image' has 2 rows, 'mask' has 3"


def test_an_empty_batch() -> None:
    assert rejected(request(image(0), mask(0))) == "the batch is empty (0 rows)"


def test_the_batch_may_reach_max_batch_size() -> None:
    validated = validate(request(image(64), mask(64)), BATCHED, 64)

    assert validated.inputs["mask"].shape == (64,)


def test_a_batch_beyond_max_batch_size() -> None:
    assert rejected(request(image(65), mask(65)), max_batch_size=64) == (
        "batch of 65 rows exceeds the model's max_batch_size 64"
    )


def test_without_a_batch_axis_first_dimensions_are_independent() -> None:
    tokens = tensor("tokens", "INT32", (100, 4))
    lengths = tensor("lengths", "INT32", (3,))

    validated = validate(request(tokens, lengths), UNBATCHED, 0)

    assert validated.inputs["tokens"].shape == (100, 4)
    assert validated.inputs["lengths"].shape == (3,)


def test_without_a_batch_axis_an_empty_first_dimension_is_allowed() -> None:
    validated = validate(request(tensor("tokens", "INT32", (0, 4)), tensor("lengths", "INT32", (0,))), UNBATCHED, 0)

    assert validated.inputs["tokens"].shape == (0, 4)


def test_without_a_batch_axis_shapes_are_still_checked() -> None:
    message = rejected(request(tensor("tokens", "INT32", (2, 5)), tensor("lengths", "INT32", (2,))), UNBATCHED, 0)

    assert message == "input 'tokens' has shape [2, 5], the model expects [-1, 4]"


def test_missing_input() -> None:
    assert rejected(request(image())) == "missing input(s) 'mask'"


def test_missing_inputs_are_all_named() -> None:
    signature = Signature(
        inputs=tuple(TensorSpec(name, "INT8", (-1,)) for name in ("a", "b", "c")),
        outputs=(TensorSpec("y", "INT8", (-1,)),),
    )

    assert rejected(request(tensor("b", "INT8", (1,))), signature) == "missing input(s) 'a', 'c'"


def test_unknown_requested_output() -> None:
    message = rejected(request(image(), mask(), outputs=["label", "logits"]))

    assert message == "unknown output(s) 'logits'; the model has 'label', 'scores'"


def test_duplicate_requested_output() -> None:
    assert rejected(request(image(), mask(), outputs=["scores", "scores"])) == "an output is requested twice"


@pytest.mark.parametrize("outputs", [None, []])
def test_no_requested_outputs_means_every_output(outputs: list[str] | None) -> None:
    validated = validate(request(image(), mask(), outputs=outputs), BATCHED, 8)

    assert validated.outputs == ("label", "scores")


def test_requested_outputs_keep_the_requested_order() -> None:
    validated = validate(request(image(), mask(), outputs=["scores", "label"]), BATCHED, 8)

    assert validated.outputs == ("scores", "label")


def test_a_subset_of_outputs() -> None:
    validated = validate(request(image(), mask(), outputs=["scores"]), BATCHED, 8)

    assert validated.outputs == ("scores",)
