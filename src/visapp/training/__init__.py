"""Training: Ultralytics YOLO on a fresh view of the converted dataset, resumable checkpoints, one MLflow run.

`run.train_model` is what the train stage (and the job worker) calls; `checkpoints` keeps the state that lets
a killed training resume; `tracking` is MLflow; `results` turns Ultralytics' numbers into ours.
"""
