"""``python -m common.convert``: the converter's command (see ``common.data.convert``)."""
from common.data.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
