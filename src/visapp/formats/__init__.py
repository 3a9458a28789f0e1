"""How data lies on disk: VOC annotations and folders, images, YOLO labels and lists, the manifest, .dvc files.

Pure readers and writers with light imports only (no torch, Ultralytics, MLflow or DVC): each format has
exactly one home here, and everything else (the stages, ingest, training, the tests) goes through it.
"""

SPLITS = ("train", "val", "test")  # the dataset splits, in this order everywhere (ImageSets lists, YOLO lists)
