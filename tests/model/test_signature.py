"""reconcile(): a declared signature checked against the one the artifact reports."""

from __future__ import annotations

import pytest

from turnout.model.signature import Signature, TensorSpec, reconcile

# what an ONNX graph typically reports: a variable batch axis and some fixed sizes
FOUND = Signature(
    inputs=(TensorSpec("input", "FP32", (-1, -1)), TensorSpec("mask", "BOOL", (-1,))),
    outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 2))),
)


def declared(
    inputs: tuple[TensorSpec, ...] = FOUND.inputs, outputs: tuple[TensorSpec, ...] = FOUND.outputs
) -> Signature:
    return Signature(inputs, outputs)


def mismatch(signature: Signature) -> str:
    with pytest.raises(ValueError) as caught:
        reconcile(signature, FOUND)
    return str(caught.value)


def test_nothing_declared_serves_what_the_model_reports() -> None:
    assert reconcile(None, FOUND) is FOUND


def test_the_same_signature_is_accepted() -> None:
    assert reconcile(declared(), FOUND) == FOUND


def test_declared_sizes_narrow_variable_dimensions() -> None:
    narrowed = (TensorSpec("input", "FP32", (-1, 30)), TensorSpec("mask", "BOOL", (8,)))

    signature = reconcile(declared(inputs=narrowed), FOUND)

    assert signature.inputs == narrowed
    assert signature.input("input") == TensorSpec("input", "FP32", (-1, 30))


def test_declared_inputs_keep_their_declared_order() -> None:
    reordered = (FOUND.inputs[1], FOUND.inputs[0])

    assert reconcile(declared(inputs=reordered), FOUND).inputs == reordered


def test_a_declared_variable_dimension_cannot_widen_a_fixed_one() -> None:
    widened = (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, -1)))

    assert (
        mismatch(declared(outputs=widened)) == "output 'probabilities' is declared [-1, -1] but the model has [-1, 2]"
    )


def test_a_fixed_size_must_agree() -> None:
    wrong = (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 3)))

    assert mismatch(declared(outputs=wrong)) == "output 'probabilities' is declared [-1, 3] but the model has [-1, 2]"


@pytest.mark.parametrize(("shape", "text"), [((-1,), "[-1]"), ((-1, 30, 1), "[-1, 30, 1]"), ((), "[]")])
def test_rank_must_agree(shape: tuple[int, ...], text: str) -> None:
    wrong = (TensorSpec("input", "FP32", shape), FOUND.inputs[1])

    assert mismatch(declared(inputs=wrong)) == f"input 'input' is declared {text} but the model has [-1, -1]"


def test_input_datatype_must_agree() -> None:
    wrong = (TensorSpec("input", "FP64", (-1, 30)), FOUND.inputs[1])

    assert mismatch(declared(inputs=wrong)) == "input 'input' is declared FP64 but the model has FP32"


def test_output_datatype_must_agree() -> None:
    wrong = (TensorSpec("label", "INT32", (-1,)),)

    assert mismatch(declared(outputs=wrong)) == "output 'label' is declared INT32 but the model has INT64"


def test_a_declared_input_the_model_lacks() -> None:
    wrong = (*FOUND.inputs, TensorSpec("extra", "FP32", (-1,)))

    assert mismatch(declared(inputs=wrong)) == "declared input 'extra' is not in the model (it has ['input', 'mask'])"


def test_a_declared_output_the_model_lacks() -> None:
    wrong = (TensorSpec("labels", "INT64", (-1,)),)

    assert mismatch(declared(outputs=wrong)) == (
        "declared output 'labels' is not in the model (it has ['label', 'probabilities'])"
    )


def test_every_model_input_must_be_declared() -> None:
    assert mismatch(declared(inputs=(FOUND.inputs[0],))) == "model input(s) ['mask'] are not declared"


def test_undeclared_outputs_are_kept_after_the_declared_ones() -> None:
    probabilities = TensorSpec("probabilities", "FP32", (-1, 2))

    signature = reconcile(declared(outputs=(probabilities,)), FOUND)

    assert signature.outputs == (probabilities, TensorSpec("label", "INT64", (-1,)))
    assert list(signature.output_names) == ["probabilities", "label"]


def test_no_declared_outputs_keeps_every_model_output() -> None:
    assert reconcile(declared(outputs=()), FOUND).outputs == FOUND.outputs


def test_signature_lookups() -> None:
    assert FOUND.input("mask") == TensorSpec("mask", "BOOL", (-1,))
    assert FOUND.input("label") is None
    assert FOUND.output("label") == TensorSpec("label", "INT64", (-1,))
    assert FOUND.output("mask") is None
    assert list(FOUND.input_names) == ["input", "mask"]
    assert FOUND.outputs[1].describe() == "probabilities FP32 [-1, 2]"
    assert FOUND.outputs[1].as_metadata() == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}


def test_declaring_only_outputs_takes_the_models_inputs() -> None:
    only_outputs = Signature((), (TensorSpec("probabilities", "FP32", (-1, 2)),))
    served = reconcile(only_outputs, FOUND)
    assert served.inputs == FOUND.inputs
    assert [t.name for t in served.outputs] == ["probabilities", "label"]
    assert "not in the model" in mismatch(Signature((), (TensorSpec("score", "FP32", (-1,)),)))


def test_outputs_cannot_narrow_a_variable_dimension() -> None:
    narrowed = TensorSpec("probabilities", "FP32", (4, 2))
    message = mismatch(declared(outputs=(narrowed,)))
    assert message.startswith("output 'probabilities' is declared [4, 2] but the model only promises [-1, 2]")
