"""Every Processing algorithm offers exactly the params its job type declares in the
backend, with the same defaults and bounds (the backend's tests keep job_params.json in
step with its models, and the command line and the service with those models)."""

from __future__ import annotations

import pytest

JOB_TYPES = ["classify", "finetune", "suggest", "geopile", "pretrain", "export", "detect-change",
             "finetune-change"]


def _algorithm(job_type):
    from gfm_plugin.processing.algorithms import ALGORITHMS

    alg = next(a for a in ALGORITHMS if a.job_type == job_type)()
    alg.initAlgorithm()
    return alg


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_processing_parameters_are_the_declared_params(qgis_app, job_type):
    from qgis.core import QgsProcessingParameterEnum, QgsProcessingParameterNumber

    from gfm_plugin.processing.declared import FOLDER_SUFFIX, params_of, processing_name

    alg = _algorithm(job_type)
    declared = {processing_name(p["name"]): p for p in params_of(job_type)}
    beside = {processing_name(p["name"]) + FOLDER_SUFFIX  # beside a list of models
              for p in params_of(job_type) if p["kind"] == "model"}
    offered = {d.name(): d for d in alg.parameterDefinitions() if d.name() not in beside}
    assert set(offered) == set(declared)
    for name, spec in declared.items():
        param = offered[name]
        assert param.flags() & param.FlagOptional or spec["required"] or "default" in spec, name
        if isinstance(param, QgsProcessingParameterNumber):
            assert param.defaultValue() == spec.get("default"), name
            if "minimum" in spec:
                assert param.minimum() == spec["minimum"], name
            if "maximum" in spec:
                assert param.maximum() == spec["maximum"], name
        elif isinstance(param, QgsProcessingParameterEnum) and spec.get("choices"):
            assert param.options() == [str(c) for c in spec["choices"]], name
            assert param.options()[param.defaultValue()] == str(spec["default"]), name
