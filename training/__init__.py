"""The model's scripts, run as `python -m training.<step>` (or `python training/<step>.py` by SageMaker).

The pipeline's jobs: prepare (validate and split the data), train, evaluate; then register, deploy,
teardown. data_contract reads the churn table by its declaration (contracts.CHURN_FEATURES) and
sample_data writes the synthetic one. What a SageMaker job runs (prepare, train, evaluate and what they
import) runs on the scikit-learn image's Python 3.10 with only its packages.

The defaults below are where the steps meet when SageMaker's variables are not set (CodeBuild, the
embedded run, a laptop): train writes there and register reads there, so the two agree without flags.
"""

DEFAULT_MODEL_DIR = "build/model"
DEFAULT_OUTPUT_DIR = "build/output"
# Written by train beside evaluation.json (data source, features, hyperparameters, library
# versions); register reads the data source from it for the package's metadata.
TRAINING_METADATA_FILE = "training_metadata.json"
