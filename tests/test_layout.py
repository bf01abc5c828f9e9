"""The house: every stage has one place, and reading a run never pulls in the training code."""

from __future__ import annotations

import subprocess
import sys


def loaded_modules(*modules: str) -> set[str]:
    code = f"import sys; import {', '.join(modules)}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {name for name in out.split() if name.startswith("demseg")}


def test_predict_evaluate_and_export_read_runs_without_importing_training_code():
    loaded = loaded_modules("demseg.predict", "demseg.predict.onnx", "demseg.evaluate.score",
                            "demseg.evaluate.scenes", "demseg.evaluate.probe", "demseg.evaluate.report",
                            "demseg.runs.folder")
    assert "demseg.runs.folder" in loaded and "demseg.predict.scene" in loaded
    assert not {name for name in loaded if name.startswith("demseg.train")}


def test_train_experiment_and_demo_share_one_training_step(monkeypatch):
    import demseg.train.experiment as experiment
    import demseg.train.run as run

    assert experiment.train_model is run.train_model
    import inspect

    assert "train_model(" in inspect.getsource(run.train_run)
    assert "train_model(" in inspect.getsource(experiment._run_group)
    import demseg.train.demo as demo

    assert "run_experiment(" in inspect.getsource(demo)
