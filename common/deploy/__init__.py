"""Deployment: from trained bundles to a tested grand-challenge.org algorithm image (``./submit.sh``).

:mod:`~eyegc.common.deploy.build` stages the bundles and builds the image offline,
:mod:`~eyegc.common.deploy.testrun` runs the sample cases the platform's way (exec, invoke,
``/opt/ml/model``), :mod:`~eyegc.common.deploy.shimrun` under the platform's own runner,
:mod:`~eyegc.common.deploy.export` writes the artefacts, and :mod:`~eyegc.common.deploy.submit`
is the command line (``python -m eyegc.common.deploy.submit``, behind ``submit.sh``).
:mod:`~eyegc.common.deploy.steps` holds what they share.
"""
