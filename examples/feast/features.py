"""The Feast definitions: a patient entity (an integer id, the row of
scikit-learn's breast cancer data) and a feature view of its 30 measurements,
named as scikit-learn names them with underscores for spaces."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32
from sklearn.datasets import load_breast_cancer

FEATURES = [name.replace(" ", "_") for name in load_breast_cancer().feature_names]

patient = Entity(name="patient", join_keys=["patient_id"], value_type=ValueType.INT64)

patient_features = FeatureView(
    name="patient_features",
    entities=[patient],
    ttl=timedelta(days=3650),
    schema=[Field(name=name, dtype=Float32) for name in FEATURES],
    source=FileSource(path="data/patients.parquet", timestamp_field="event_timestamp"),
    online=True,
)
