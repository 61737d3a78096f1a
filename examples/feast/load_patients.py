"""Write the breast cancer patients into a Feast repository's online store.

    .venv-feast/bin/python examples/feast/load_patients.py [REPO]   (default examples/feast/repo)

Run with Feast's own environment (`make feast` builds .venv-feast): Feast
pins libraries turnout's environment holds at other versions, and turnout
only talks to Feast's feature server over HTTP. Makes REPO a Feast
repository (this directory's feature_store.yaml and features.py), registers
the definitions (`feast apply`, from Python) and writes each patient's row,
its id the row number, straight to the SQLite online store. Then serve it:

    .venv-feast/bin/feast -c REPO serve -h 127.0.0.1 -p 6566
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    repo = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "repo"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    for name in ("feature_store.yaml", "features.py"):
        shutil.copy(HERE / name, repo / name)
    sys.path.insert(0, str(repo))
    import pandas as pd
    from feast import FeatureStore
    from features import FEATURES, patient, patient_features
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data.astype("float32")
    frame = pd.DataFrame(data, columns=FEATURES)
    frame.insert(0, "patient_id", range(len(frame)))
    frame["event_timestamp"] = datetime.now(UTC)
    frame.to_parquet(repo / "data" / "patients.parquet")  # the view's offline source
    store = FeatureStore(repo_path=str(repo))
    store.apply([patient, patient_features])
    store.write_to_online_store("patient_features", frame)
    print(f"{len(frame)} patients written to the Feast repository {repo}")


if __name__ == "__main__":
    main()
