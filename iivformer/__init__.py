"""IIVFormer workbench: multi-view 2D-to-3D human pose lifting, from archives to paper figures.

Each stage of the data flow has a module named for it:

- :mod:`~iivformer.skeleton`, :mod:`~iivformer.cameras`: the body (17 and 32 joints) and the calibrated cameras.
- :mod:`~iivformer.archives`: safe reading, validation and discovery of VideoPose3D-format archives.
- :mod:`~iivformer.synthetic`: the embedded default data, Human3.6M-format archives made from kinematic motion.
- :mod:`~iivformer.prepare`: archives -> normalised 2D inputs (N, V, J, 2) and root-relative 3D targets (N, 1, J, 3).
- :mod:`~iivformer.config`: the published recipe (ModelConfig, TrainConfig) and the profiles that scale it.
- :mod:`~iivformer.model`: IIVFormer itself, checkpoint-compatible with the published cpn.pth.
- :mod:`~iivformer.runtime`, :mod:`~iivformer.distributed`: device choice, seeding, versions, precision
  and compilation; several processes under torchrun (process group, sharding).
- :mod:`~iivformer.train`, :mod:`~iivformer.logbook`: the training loop and its log.
- :mod:`~iivformer.checkpoint`: the checkpoint layout, safe loading, resume state, the plain state dict.
- :mod:`~iivformer.export`: portable exports (state dict, TorchScript, ONNX), each with a model card.
- :mod:`~iivformer.metrics`: MPJPE, Procrustes-aligned P-MPJPE, N-MPJPE, velocity error, PCK, AUC.
- :mod:`~iivformer.evaluate`, :mod:`~iivformer.baselines`: Protocol 1/2 per action, per joint and per frame,
  saved with its :mod:`~iivformer.provenance`; reference methods on the same frames.
- :mod:`~iivformer.subsets`, :mod:`~iivformer.robustness`: every subset of views; detector noise and
  per-camera forensics.
- :mod:`~iivformer.tables`, :mod:`~iivformer.viz`: every table (text, Markdown, LaTeX); figures, 3D viewer, explorer.
- :mod:`~iivformer.files`, :mod:`~iivformer.errors`: atomic writes and output checks; error types and exit statuses.
- :mod:`~iivformer.cli` (its subcommands in :mod:`~iivformer.commands`), :mod:`~iivformer.workbench`: the
  `iivformer` command; the notebooks' one-call set-up.
"""
