"""DVC stage `validate`: data/raw (VOC) -> data/validated/{manifest.jsonl, report.json}."""

import sys
from pathlib import Path

from visapp.config import load_params
from visapp.errors import exit_on_error
from visapp.validate import format_summary, validate_dataset, write_validation


def main() -> int:
    params = load_params()
    out_dir = Path(params.paths.validated)
    result = validate_dataset(Path(params.paths.raw), params.data)
    write_validation(result, out_dir, on_error=params.data.on_error)
    print(format_summary(result.report))
    if result.report["rejected"] and params.data.on_error == "fail":
        print(
            f"validate: {result.report['rejected']} rejected and data.on_error=fail (every issue is in "
            f"{out_dir / 'report.json'}): fix them, or run with data.on_error=skip to leave them out"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
