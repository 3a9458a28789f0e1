"""DVC stage `validate`: data/raw (VOC) -> data/validated/{manifest.jsonl, report.json}."""

import sys
from pathlib import Path

from visapp.config import load_params
from visapp.errors import exit_on_error
from visapp.validate import format_summary, validate_dataset, write_validation


def main() -> int:
    params = load_params()
    result = validate_dataset(Path(params.paths.raw), params.data)
    write_validation(result, Path(params.paths.validated), on_error=params.data.on_error)
    print(format_summary(result.report))
    if result.report["rejected"] and params.data.on_error == "fail":
        print("validate: rejected samples and data.on_error=fail; fix them, or run with data.on_error=skip")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
