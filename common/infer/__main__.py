"""``python -m common.infer``: lift images, folders or videos (see ``common.infer.lifting``)."""
from common.infer.lifting import main

raise SystemExit(main())
