"""nnU-Net v2 inside eyegc: its raw dataset format, its trained models as eyegc bundles, its training
as the ``nnunet`` backend.

- :mod:`~eyegc.common.nnunet.dataset`: a task's data in nnU-Net's raw layout (no nnunetv2 needed).
- :mod:`~eyegc.common.nnunet.model`: a trained nnU-Net fold in an eyegc bundle and prediction through
  nnunetv2's own predictor.
- :mod:`~eyegc.common.nnunet.backend`: ``eyegc train --backend nnunet`` and ``eyegc nnunet import``.
- :mod:`~eyegc.common.nnunet.worker`: nnU-Net's planning, preprocessing and training in a child
  process whose ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results`` are the run's own.

nnunetv2 is an optional extra (``pip install -c constraints.txt 'eyegc[nnunet]'``).
"""
