"""Put the breast-cancer patients' features where the cancer_screening
pipeline reads them: one Redis hash per patient, ``patient:<row>``, one field
per feature (scikit-learn's feature names), for every row of the data set.

    python examples/load_features.py [redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import sys

import redis
from sklearn.datasets import load_breast_cancer


def load(url: str) -> int:
    cancer = load_breast_cancer()
    client = redis.Redis.from_url(url)
    with client.pipeline(transaction=False) as pipe:
        for row, values in enumerate(cancer.data):
            pipe.hset(
                f"patient:{row}", mapping={n: float(v) for n, v in zip(cancer.feature_names, values, strict=True)}
            )
        pipe.execute()
    client.close()
    return len(cancer.data)


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"
    print(f"{load(url)} patients' features in {url} (patient:0 .. patient:568)")
