"""``python -m common.analyze``: the report on a predictions file (see ``common.analysis.report``)."""
from common.analysis.report import main

if __name__ == "__main__":
    raise SystemExit(main())
