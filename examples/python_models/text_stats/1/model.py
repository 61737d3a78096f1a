"""Text in, text and numbers out: each string shouted, and its length in characters."""

from turnout import ModelContext, PythonModel, Tensor


class TextStats(PythonModel):
    inputs = (Tensor("text", "BYTES", [-1]),)
    outputs = (Tensor("shouted", "BYTES", [-1]), Tensor("characters", "INT64", [-1]))

    def load(self, context: ModelContext) -> None:
        self.suffix = context.options.get("suffix", "")

    def predict(self, inputs, parameters):
        texts = [raw.decode("utf-8", "replace") for raw in inputs["text"]]  # BYTES arrive as bytes, any bytes
        return {
            "shouted": [text.upper() + self.suffix for text in texts],  # str is sent as UTF-8
            "characters": [len(text) for text in texts],
        }
