"""VIS: reproducible YOLO object detectors from Pascal VOC datasets (the library behind the stages and `visapp`).

The package's folders are its layers (docs/architecture.md): `formats` (how data lies on disk), `dataset`
(what the data stages do), `ingest`, `training`, `registry`, `integrations` (other tools' fragile parts), and
the faces on top: `cli` and `console`.
"""
