"""Runs: the configuration of a training run and the folder it is written to, read by every later stage.

- :mod:`demseg.runs.config`: :class:`TrainConfig`, every setting of a run (saved as config.json);
- :mod:`demseg.runs.folder`: reading a run folder back (config, model, resolution check, digest);
- :mod:`demseg.runs.manifest`: the manifest beside every output (config, versions, data hashes, tiles).
"""
