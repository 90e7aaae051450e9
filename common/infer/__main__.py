"""``python -m common.infer``: lift images, folders or videos (see ``common.infer.cli``)."""
from common.infer.cli import main

raise SystemExit(main())
