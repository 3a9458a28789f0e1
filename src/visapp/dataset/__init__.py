"""What the data stages do: validate a VOC folder, convert it to YOLO labels, describe it (statistics and
figures), build Ultralytics views of it, and write the built-in synthetic dataset.

Only formats, config and the file helpers below; never torch, Ultralytics, MLflow or DVC (the import rules
in pyproject.toml hold this), so the data stages start in about a second.
"""
