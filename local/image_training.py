"""The scikit-learn image's training entry, for the embedded run: what `SAGEMAKER_TRAINING_MODULE` names.

The image 1.4-2 sets `SAGEMAKER_TRAINING_MODULE=sagemaker_sklearn_container.training:main`; its `train` command
(sagemaker-training's CLI) imports that module and calls `main()`, which reads the training environment
(hyperparameters.json, inputdataconfig.json, resourceconfig.json under SAGEMAKER_BASE_DIR, default /opt/ml)
and runs the user's script through the toolkit's `entry_point.run`: the toolkit downloads and unpacks
`sagemaker_submit_directory` into <base>/code, puts it on PYTHONPATH, exports SM_* variables and runs
`python <sagemaker_program> --<hp> <value> ...` from there. That package is built inside the image and
not published, so this module does the same with the same toolkit calls. It runs under `.venv-image`
(Python 3.10, sagemaker-training 4.8.0): stdlib and the toolkit only.

    SAGEMAKER_BASE_DIR=<job>/opt/ml SAGEMAKER_TRAINING_MODULE=image_training:main .venv-image/bin/train
"""

from __future__ import annotations

import logging

LOG = logging.getLogger(__name__)


def main() -> None:
    """Run the user's script in script mode; the toolkit's trainer turns an exception into the failure file."""
    # Imported here: the module must import in the project's own venv too (tests, type checks), where the
    # toolkit (which pins an older boto3) is not installed.
    from sagemaker_training import entry_point, environment, runner  # pyright: ignore[reportMissingImports]

    env = environment.Environment()
    LOG.info("Invoking user training script %s from %s", env.user_entry_point, env.module_dir)
    entry_point.run(
        uri=env.module_dir,
        user_entry_point=env.user_entry_point,
        args=env.to_cmd_args(),
        env_vars=env.to_env_vars(),
        runner_type=runner.ProcessRunnerType,
    )
